"""auth.v1.AuthService over the domain (accounts and sessions)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from auth_server.api.guard import current_call
from auth_server.api.servicers import convert
from auth_server.domain import devices
from auth_server.domain.accounts import Accounts
from auth_server.domain.errors import AuthError, Code
from auth_server.domain.profile import Profiles
from auth_server.domain.recovery import Recovery
from auth_server.domain.revocations import RevocationFeed
from auth_server.domain.services import ServiceAccounts
from auth_server.domain.sessions import Device, Sessions
from auth_server.domain.signups import Signups
from auth_server.domain.tokens import ServiceClaims


@dataclass(frozen=True)
class AccountFlows:
    """The account lifecycle's domain parts: sign-up, recovery, the caller's profile."""

    signups: Signups
    recovery: Recovery
    profiles: Profiles


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        accounts: Accounts,
        sessions: Sessions,
        services: ServiceAccounts,
        revocations: RevocationFeed,
        flows: AccountFlows,
    ) -> None:
        self._signups = flows.signups
        self._recovery = flows.recovery
        self._profiles = flows.profiles
        self._revocations = revocations
        self._accounts = accounts
        self._sessions = sessions
        self._services = services

    def Signup(self, request: auth_pb2.SignupRequest, context: grpc.ServicerContext) -> auth_pb2.SignupResponse:
        call = current_call()
        started = self._signups.start(
            call.tenant, request.username, request.email, request.password, request.name, request.phone, call.ip_address
        )
        return auth_pb2.SignupResponse(
            signup_id=started.signup_id,
            expires_at=convert.timestamp(started.expires_at),
            delivery_hint=started.delivery_hint,
        )

    def VerifySignup(
        self, request: auth_pb2.VerifySignupRequest, context: grpc.ServicerContext
    ) -> auth_pb2.VerifySignupResponse:
        tenant = current_call().tenant
        user = self._signups.verify(tenant, request.signup_id, request.code)
        return auth_pb2.VerifySignupResponse(user=convert.user(user, tenant))

    def Login(self, request: auth_pb2.LoginRequest, context: grpc.ServicerContext) -> auth_pb2.LoginResponse:
        call = current_call()
        started = self._accounts.login(
            call.tenant, request.username_or_email, request.password, call.ip_address, request.device_token
        )
        return auth_pb2.LoginResponse(
            login_id=started.login_id,
            expires_at=convert.timestamp(started.expires_at),
            delivery_hint=started.delivery_hint,
        )

    def VerifyOtp(
        self, request: auth_pb2.VerifyOtpRequest, context: grpc.ServicerContext
    ) -> auth_pb2.VerifyOtpResponse:
        call = current_call()
        explicit = request.device_name if request.HasField("device_name") else call.device_name

        def device() -> Device:  # parsing the user agent costs up to milliseconds: only for a right code
            return Device(
                name=devices.device_name(explicit, call.user_agent),
                ip_address=call.ip_address,
                user_agent=devices.clean_user_agent(call.user_agent),
            )

        signed_in = self._accounts.verify_otp(call.tenant, request.login_id, request.otp, device)
        return auth_pb2.VerifyOtpResponse(**convert.token_fields(signed_in.tokens), device_token=signed_in.device_token)

    def Refresh(self, request: auth_pb2.RefreshRequest, context: grpc.ServicerContext) -> auth_pb2.RefreshResponse:
        tokens = self._sessions.refresh(current_call().tenant, request.refresh_token)
        return auth_pb2.RefreshResponse(**convert.token_fields(tokens))

    def UnlockAccount(
        self, request: auth_pb2.UnlockAccountRequest, context: grpc.ServicerContext
    ) -> auth_pb2.UnlockAccountResponse:
        self._accounts.unlock_account(current_call().tenant, request.token)
        return auth_pb2.UnlockAccountResponse()

    # --- forgotten password and the "This wasn't me" link (domain/recovery.py)

    def RequestPasswordReset(
        self, request: auth_pb2.RequestPasswordResetRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RequestPasswordResetResponse:
        call = current_call()
        started = self._recovery.request_reset(call.tenant, request.username_or_email, call.ip_address)
        return auth_pb2.RequestPasswordResetResponse(
            reset_id=started.reset_id, expires_at=convert.timestamp(started.expires_at)
        )

    def ResetPassword(
        self, request: auth_pb2.ResetPasswordRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ResetPasswordResponse:
        call = current_call()
        revoked = self._recovery.reset_password(
            call.tenant, request.reset_id, request.code, request.new_password, call.ip_address
        )
        return auth_pb2.ResetPasswordResponse(revoked_count=revoked)

    def ReportSignIn(
        self, request: auth_pb2.ReportSignInRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ReportSignInResponse:
        call = current_call()
        started = self._recovery.report_sign_in(call.tenant, request.token, call.ip_address)
        return auth_pb2.ReportSignInResponse(
            reset_id=started.reset_id, expires_at=convert.timestamp(started.expires_at)
        )

    def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, context: grpc.ServicerContext
    ) -> auth_pb2.IssueServiceTokenResponse:
        call = current_call()
        issued = self._services.issue_token(call.tenant, request.client_id, request.client_secret, call.ip_address)
        return auth_pb2.IssueServiceTokenResponse(
            access_token=issued.access_token, expires_at=convert.timestamp(issued.expires_at)
        )

    def Introspect(
        self, request: auth_pb2.IntrospectRequest, context: grpc.ServicerContext
    ) -> auth_pb2.IntrospectResponse:
        tenant = current_call().tenant
        try:
            claims = self._services.verify_token(request.access_token)  # signature first, no store read
            if isinstance(claims, ServiceClaims):
                # A service token: the account read from the store now, and checked against this tenant
                # (as the guard checks it when the service calls here itself).
                service = self._services.authenticate(tenant, claims)
                return auth_pb2.IntrospectResponse(
                    active=True,
                    service_account=auth_pb2.ServiceAccountInfo(id=service.account.id, name=service.account.name),
                    expires_at=convert.timestamp(service.token_expires_at),
                )
            # Read from the store, never the session cache: the guards that ask cache the answer themselves
            # (following the revocation feed), and two caches in a row would add up their delays.
            caller = self._sessions.caller_for(tenant, claims, fresh=True)
        except AuthError as error:
            # A dead token is an answer, not an error; so is a service account refused in this tenant
            # (CALLER_NOT_ALLOWED, which a guard answers as PERMISSION_DENIED, as this server's guard does).
            if error.code is Code.UNAUTHENTICATED or error.reason == "CALLER_NOT_ALLOWED":
                return auth_pb2.IntrospectResponse(active=False, inactive_reason=error.reason)
            raise
        return auth_pb2.IntrospectResponse(
            active=True,
            user=convert.user(caller.user, tenant),
            session_id=caller.session.id,
            tenant_id=tenant,
            expires_at=convert.timestamp(caller.token_expires_at),
        )

    def WatchRevocations(
        self, request: auth_pb2.WatchRevocationsRequest, context: grpc.ServicerContext
    ) -> Iterator[auth_pb2.WatchRevocationsResponse]:
        events = self._revocations.watch(current_call().tenant, request.after, context.is_active)
        try:
            # Headers now, not with the first event: the caller learns at once that the stream is up.
            context.send_initial_metadata(())
            for entry in events:
                yield auth_pb2.WatchRevocationsResponse(event=convert.revocation(entry))
        finally:
            events.close()  # gives the stream's slot back however the call ends

    def GetMe(self, request: auth_pb2.GetMeRequest, context: grpc.ServicerContext) -> auth_pb2.GetMeResponse:
        caller = current_call().require_caller()
        return auth_pb2.GetMeResponse(user=convert.user(caller.user, caller.tenant), session_id=caller.session.id)

    def ListSessions(
        self, request: auth_pb2.ListSessionsRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListSessionsResponse:
        caller = current_call().require_caller()
        return auth_pb2.ListSessionsResponse(
            sessions=[convert.session(s, caller.session.id) for s in self._sessions.list(caller)]
        )

    def LogoutSession(
        self, request: auth_pb2.LogoutSessionRequest, context: grpc.ServicerContext
    ) -> auth_pb2.LogoutSessionResponse:
        self._sessions.logout(current_call().require_caller(), request.session_id)
        return auth_pb2.LogoutSessionResponse(session_id=request.session_id)

    def LogoutAll(
        self, request: auth_pb2.LogoutAllRequest, context: grpc.ServicerContext
    ) -> auth_pb2.LogoutAllResponse:
        count = self._sessions.logout_all(current_call().require_caller(), request.keep_current)
        return auth_pb2.LogoutAllResponse(revoked_count=count)

    def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        call = current_call()
        count = self._accounts.change_password(
            call.require_caller(), request.current_password, request.new_password, call.ip_address
        )
        return auth_pb2.ChangePasswordResponse(revoked_count=count)

    # --- the caller's profile (domain/profile.py)

    def UpdateMe(self, request: auth_pb2.UpdateMeRequest, context: grpc.ServicerContext) -> auth_pb2.UpdateMeResponse:
        caller = current_call().require_caller()
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        user = self._profiles.update_me(caller, paths, request.name, request.phone)
        return auth_pb2.UpdateMeResponse(user=convert.user(user, caller.tenant))

    def ChangeEmail(
        self, request: auth_pb2.ChangeEmailRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ChangeEmailResponse:
        call = current_call()
        started = self._profiles.change_email(
            call.require_caller(), request.new_email, request.current_password, call.ip_address
        )
        return auth_pb2.ChangeEmailResponse(
            change_id=started.change_id,
            expires_at=convert.timestamp(started.expires_at),
            delivery_hint=started.delivery_hint,
        )

    def ConfirmEmailChange(
        self, request: auth_pb2.ConfirmEmailChangeRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ConfirmEmailChangeResponse:
        caller = current_call().require_caller()
        user = self._profiles.confirm_email_change(caller, request.change_id, request.code)
        return auth_pb2.ConfirmEmailChangeResponse(user=convert.user(user, caller.tenant))
