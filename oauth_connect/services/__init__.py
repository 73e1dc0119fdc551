"""The service layer: everything views, commands and your code call to act on connections."""

from .async_calls import acheck_connection, adisconnect, arefresh_connection, arotate_token
from .authorize import complete_authorization, start_authorization
from .bulk import (
    due_connection_ids,
    due_connections,
    refresh_due_connections,
    refresh_one_if_due,
    refresh_these_if_due,
)
from .check import can_check, check_connection
from .connect import connect_with_credentials, forget_credentials
from .disconnect import disconnect
from .refresh import refresh_connection, refresh_rejected_token, refresh_when, rotate_token
from .session import connection_session

__all__ = [
    "acheck_connection",
    "adisconnect",
    "arefresh_connection",
    "arotate_token",
    "can_check",
    "check_connection",
    "complete_authorization",
    "connect_with_credentials",
    "connection_session",
    "disconnect",
    "due_connection_ids",
    "due_connections",
    "forget_credentials",
    "refresh_connection",
    "refresh_due_connections",
    "refresh_one_if_due",
    "refresh_rejected_token",
    "refresh_these_if_due",
    "refresh_when",
    "rotate_token",
    "start_authorization",
]
