"""auth.v1.AdminService over the admin domain."""

from __future__ import annotations

import grpc

from auth_client.gen.auth.v1 import admin_pb2, admin_pb2_grpc
from auth_server.api.guard import ROLE_NAMES, current_call
from auth_server.api.servicers import convert
from auth_server.domain.admin import Admin


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    def ListUsers(
        self, request: admin_pb2.ListUsersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListUsersResponse:
        caller = current_call().require_caller()
        users, next_token = self._admin.list_users(caller, request.page_size, request.page_token)
        return admin_pb2.ListUsersResponse(
            users=[convert.user(u, caller.tenant) for u in users], next_page_token=next_token
        )

    def LockUser(self, request: admin_pb2.LockUserRequest, context: grpc.ServicerContext) -> admin_pb2.LockUserResponse:
        count = self._admin.lock_user(current_call().require_caller(), request.user_id, request.reason)
        return admin_pb2.LockUserResponse(revoked_count=count)

    def UnlockUser(
        self, request: admin_pb2.UnlockUserRequest, context: grpc.ServicerContext
    ) -> admin_pb2.UnlockUserResponse:
        self._admin.unlock_user(current_call().require_caller(), request.user_id)
        return admin_pb2.UnlockUserResponse()

    def SetUserRole(
        self, request: admin_pb2.SetUserRoleRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetUserRoleResponse:
        caller = current_call().require_caller()
        user = self._admin.set_role(caller, request.user_id, ROLE_NAMES.get(request.role, ""))
        return admin_pb2.SetUserRoleResponse(user=convert.user(user, caller.tenant))

    def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListAuditEventsResponse:
        caller = current_call().require_caller()
        events, next_token = self._admin.list_events(caller, request.page_size, request.page_token, request.user_id)
        return admin_pb2.ListAuditEventsResponse(
            events=[convert.audit_event(e) for e in events], next_page_token=next_token
        )
