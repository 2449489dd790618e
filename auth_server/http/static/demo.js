// auth-server demo: sign up with an e-mailed code, log in with another, list and revoke devices.
// The access token is kept in this variable only (never in storage); the refresh token is an HttpOnly
// cookie the bridge sets, so this script never sees it. Every answer of the bridge is JSON; errors are
// {"error": {"code", "status", "reason", "message"}} with the reason in lower case.
// An error is shown inside the form that caused it (its .form-error), not at the top of the page; the
// top line is for confirmations. Passwords and codes are wiped from the forms as soon as they are used
// and whenever the page shows the signed-out forms again.
'use strict';

const API = '/api/v1/auth';
const REVOKED_TEXT = 'Your session was revoked from another device';
let accessToken = null;
let loginId = null;
let signupId = null;  // a pending sign-up whose code the user is asked for

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(error) {
    super(error.message || 'Request failed');
    this.code = error.code;
    this.reason = error.reason;
    this.fields = error.fields || [];
  }
}

async function call(method, path, body, { auth = true, retry = true } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && accessToken) headers.Authorization = 'Bearer ' + accessToken;
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  const data = await response.json().catch(() => ({}));
  if (response.ok) return data;
  const error = data.error || { code: response.status, reason: 'unknown', message: response.statusText };
  if (response.status === 401 && error.reason === 'session_revoked') {
    showRevoked();
    throw new ApiError(error);
  }
  if (response.status === 401 && error.reason === 'token_expired' && auth && retry && (await refresh())) {
    return call(method, path, body, { auth, retry: false });
  }
  throw new ApiError(error);
}

async function refresh() {
  try {
    const data = await call('POST', '/refresh', {}, { auth: false, retry: false });
    accessToken = data.accessToken;
    return true;
  } catch (error) {
    return false;
  }
}

function say(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

// Where a failed action's error goes: the .form-error of its form (or of the device list).
const ERROR_SLOTS = ['signup-error', 'signup-code-error', 'login-error', 'code-error', 'devices-error', 'forgot-error', 'reset-error'];

function clearError(slot) {
  $(slot).textContent = '';
  $(slot).hidden = true;
}

function explain(error, slot) {
  const fields = (error.fields || []).map((f) => `${f.field}: ${f.description}`).join('; ');
  const text = fields ? `${error.message} (${fields})` : error.message;
  const target = slot && !$(slot).parentElement.closest('[hidden]') ? $(slot) : null;
  if (target === null) {  // nothing of that form on screen: the top line is the only place left
    say(text, true);
    return;
  }
  say('');  // an older confirmation at the top would contradict the error
  target.textContent = text;
  target.hidden = false;
  target.scrollIntoView({ block: 'nearest' });
}

// Passwords and codes never stay in a form once used, nor when the signed-out forms come back.
function clearSecrets() {
  for (const id of ['signup-password', 'signup-code', 'login-password', 'code', 'reset-code', 'reset-password']) $(id).value = '';
}

function showSignedOut() {
  accessToken = null;
  clearSecrets();
  ERROR_SLOTS.forEach(clearError);
  $('signed-in').hidden = true;
  $('signed-out').hidden = false;
  $('code-form').hidden = loginId === null;
  $('signup-code-form').hidden = signupId === null;
}

function showRevoked() {
  loginId = null;
  showSignedOut();
  const notice = $('notice');
  notice.textContent = REVOKED_TEXT;
  notice.hidden = false;
  say('');
}

function formatTime(value) {
  return value ? new Date(value).toLocaleString() : 'unknown';
}

function renderDevices(sessions) {
  const list = $('devices');
  list.replaceChildren();
  for (const session of sessions) {
    const item = document.createElement('li');
    item.className = session.isCurrent ? 'current' : '';
    item.dataset.sessionId = session.id;

    const device = document.createElement('div');
    device.className = 'device';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = session.deviceName || 'Unknown device';
    device.append(name);
    if (session.isCurrent) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = 'This device';
      device.append(' ', badge);
    }
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = `${session.ipAddress || 'unknown IP'} · last active ${formatTime(session.lastActivity)}`;
    device.append(meta);

    const revoke = document.createElement('button');
    revoke.type = 'button';
    revoke.className = 'revoke secondary';
    revoke.textContent = session.isCurrent ? 'Log out' : 'Revoke';
    revoke.addEventListener('click', () => revokeSession(session.id, session.isCurrent));

    item.append(device, revoke);
    list.append(item);
  }
}

async function showDevices() {
  try {
    const me = await call('GET', '/me');
    const data = await call('GET', '/sessions');
    $('whoami').textContent = `Signed in as ${me.user.username} (${me.user.email}).`;
    renderDevices(data.sessions);
    $('signed-out').hidden = true;
    $('signed-in').hidden = false;
  } catch (error) {
    if (error.reason !== 'session_revoked') explain(error, 'devices-error');
  }
}

async function revokeSession(id, isCurrent) {
  clearError('devices-error');
  try {
    const data = await call('DELETE', '/sessions/' + encodeURIComponent(id));
    say(data.message);
    if (isCurrent) {
      showSignedOut();
    } else {
      await showDevices();
    }
  } catch (error) {
    if (error.reason !== 'session_revoked') explain(error, 'devices-error');
  }
}

function onSubmit(id, slot, handler) {
  $(id).addEventListener('submit', async (event) => {
    event.preventDefault();
    clearError(slot);
    try {
      await handler();
    } catch (error) {
      if (error.reason !== 'session_revoked') explain(error, slot);
    }
  });
}

onSubmit('signup-form', 'signup-error', async () => {
  const data = await call(
    'POST',
    '/signup',
    { username: $('signup-username').value, email: $('signup-email').value, password: $('signup-password').value },
    { auth: false },
  );
  // The same answer whether or not the address has an account (its owner gets a notice, not a code).
  signupId = data.signupId;
  $('signup-password').value = '';  // sent: it has no business staying on screen
  $('signup-code').value = '';
  clearError('signup-code-error');
  $('signup-code-hint').textContent = `We e-mailed a 6-digit code to ${data.deliveryHint}. Enter it to create your account.`;
  $('signup-code-form').hidden = false;
  $('signup-code').focus();
  say(data.message);
});

onSubmit('signup-code-form', 'signup-code-error', async () => {
  const data = await call('POST', '/signup/verify', { signupId, code: $('signup-code').value.trim() }, { auth: false });
  signupId = null;
  $('signup-form').reset();
  $('signup-code-form').reset();
  $('signup-code-form').hidden = true;
  say(`Account created for ${data.user.username}. Log in now.`);
  $('login-user').value = data.user.username;
});

onSubmit('login-form', 'login-error', async () => {
  const data = await call(
    'POST',
    '/login',
    { usernameOrEmail: $('login-user').value, password: $('login-password').value },
    { auth: false },
  );
  loginId = data.loginId;
  $('login-password').value = '';  // used: the code is the next step
  $('code').value = '';
  clearError('code-error');
  $('code-hint').textContent = `We e-mailed a 6-digit code to ${data.deliveryHint}.`;
  $('code-form').hidden = false;
  $('code').focus();
  say(data.message);
});

onSubmit('code-form', 'code-error', async () => {
  const body = { loginId, otp: $('code').value.trim() };
  const deviceName = $('device-name').value.trim();
  if (deviceName) body.deviceName = deviceName;
  const data = await call('POST', '/login/verify', body, { auth: false });
  accessToken = data.accessToken;
  loginId = null;
  clearSecrets();
  $('code-form').reset();
  $('code-form').hidden = true;
  $('notice').hidden = true;
  say(data.message);
  await showDevices();
});

$('refresh-devices').addEventListener('click', () => {
  clearError('devices-error');
  return showDevices();
});

$('logout-all').addEventListener('click', async () => {
  clearError('devices-error');
  try {
    const data = await call('POST', '/logout/all', { keepCurrent: false });
    showSignedOut();
    say(`${data.message} (${data.revokedCount}).`);
  } catch (error) {
    if (error.reason !== 'session_revoked') explain(error, 'devices-error');
  }
});

// --- Forgotten password: RequestPasswordReset, then ResetPassword with the mailed code.
let resetId = null;

$('forgot-open').addEventListener('click', () => {
  $('forgot-form').hidden = false;
  $('forgot-user').value = $('login-user').value;
  $('forgot-user').focus();
});

onSubmit('forgot-form', 'forgot-error', async () => {
  const data = await call('POST', '/password/forgot', { usernameOrEmail: $('forgot-user').value }, { auth: false });
  resetId = data.resetId;
  $('reset-code').value = '';
  $('reset-password').value = '';
  clearError('reset-error');
  $('reset-form').hidden = false;
  $('reset-code').focus();
  say('Check your inbox for the code.');
});

onSubmit('reset-form', 'reset-error', async () => {
  const body = { resetId, code: $('reset-code').value.trim(), newPassword: $('reset-password').value };
  const data = await call('POST', '/password/reset', body, { auth: false });
  resetId = null;
  $('reset-form').reset();
  $('reset-form').hidden = true;
  $('forgot-form').hidden = true;
  $('login-user').value = $('forgot-user').value;
  say(`Your password was reset and ${data.revokedCount || 0} device(s) signed out. Log in with the new password.`);
});

// A reload loses the in-memory access token: the HttpOnly refresh cookie (if any) gets a new one.
(async () => {
  if (await refresh()) {
    await showDevices();
  } else {
    showSignedOut();
  }
  document.body.dataset.ready = 'true';
})();
