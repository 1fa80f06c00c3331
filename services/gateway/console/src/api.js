// The console's one door to the gateway: the operator's tokens (OAuth2 password and refresh
// grants), JSON calls that turn problem documents (RFC 9457) into errors with their message,
// and the live stream of changes (server-sent events read over fetch, so the token goes in a
// header like every other call).
import { reactive } from 'vue'

const KEY = 'qianshao.session'

export const session = reactive({
  access: null,
  refresh: null,
  expiresAt: 0,
  me: null, // {subject, roles, scopes, region_prefix}
})

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || problem.error_description || `HTTP ${status}`)
    this.status = status
    this.problem = problem
  }
}

function save() {
  sessionStorage.setItem(
    KEY,
    JSON.stringify({ access: session.access, refresh: session.refresh, expiresAt: session.expiresAt }),
  )
}

export function restore() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || 'null')
    if (s && s.refresh) Object.assign(session, s)
  } catch {
    sessionStorage.removeItem(KEY)
  }
}

async function tokenRequest(fields) {
  const r = await fetch('/api/v1/auth/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields),
  })
  const doc = await r.json().catch(() => ({}))
  if (!r.ok) throw new ApiError(r.status, doc)
  session.access = doc.access_token
  session.refresh = doc.refresh_token
  session.expiresAt = Date.now() + doc.expires_in * 1000
  save()
}

export async function signIn(username, password) {
  await tokenRequest({ grant_type: 'password', username, password })
  await loadMe()
}

let refreshing = null
async function refreshTokens() {
  if (!session.refresh) throw new ApiError(401, { title: '请重新登录' })
  // one refresh at a time: a refresh token works once
  refreshing ??= tokenRequest({ grant_type: 'refresh_token', refresh_token: session.refresh }).finally(
    () => (refreshing = null),
  )
  return refreshing
}

async function freshToken() {
  if (!session.access || Date.now() > session.expiresAt - 30_000) await refreshTokens()
  return session.access
}

export async function signOut() {
  const token = session.refresh
  Object.assign(session, { access: null, refresh: null, expiresAt: 0, me: null })
  sessionStorage.removeItem(KEY)
  if (token) {
    await fetch('/api/v1/auth/revoke', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    }).catch(() => {})
  }
}

export async function loadMe() {
  session.me = await api('GET', '/api/v1/auth/me')
}

export function can(scope) {
  const me = session.me
  return !!me && (me.roles.includes('admin') || me.scopes.includes(scope))
}

export function hasRole(role) {
  return !!session.me && (session.me.roles.includes(role) || session.me.roles.includes('admin'))
}

// A call to the gateway; ``body`` is sent as JSON unless it is a string or a Blob (a CSV or
// workbook upload). Answers parsed as JSON, or as text for other types.
export async function api(method, path, body, { contentType } = {}) {
  const send = async () => {
    const headers = { Authorization: `Bearer ${await freshToken()}`, Accept: 'application/json' }
    let payload
    if (body instanceof Blob || typeof body === 'string') {
      payload = body
      headers['Content-Type'] = contentType || body.type || 'text/csv'
    } else if (body !== undefined) {
      payload = JSON.stringify(body)
      headers['Content-Type'] = 'application/json'
    }
    return fetch(path, { method, headers, body: payload })
  }
  let r = await send()
  if (r.status === 401 && session.refresh) {
    await refreshTokens()
    r = await send()
  }
  const type = r.headers.get('content-type') || ''
  const doc = type.includes('json') ? await r.json().catch(() => ({})) : await r.text()
  if (!r.ok) throw new ApiError(r.status, typeof doc === 'object' ? doc : { title: doc })
  return doc
}

// -- live updates ------------------------------------------------------------------------------

export const live = reactive({ connected: false, lastChange: null })
const listeners = new Set()

export function onChange(fn) {
  listeners.add(fn)
  return () => listeners.delete(fn)
}

let stream = null

export function startLive() {
  if (stream) return
  const controller = new AbortController()
  stream = controller
  const loop = async () => {
    while (stream === controller) {
      try {
        await readStream(controller.signal)
      } catch (e) {
        if (controller.signal.aborted) break
        if (e instanceof ApiError && e.status === 401) {
          try {
            await refreshTokens()
          } catch {
            break
          }
        }
      }
      live.connected = false
      await new Promise((ok) => setTimeout(ok, 2000))
    }
  }
  loop()
}

export function stopLive() {
  if (stream) stream.abort()
  stream = null
  live.connected = false
}

async function readStream(signal) {
  const r = await fetch('/api/v1/events', {
    headers: { Authorization: `Bearer ${await freshToken()}`, Accept: 'text/event-stream' },
    signal,
  })
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => ({})))
  live.connected = true
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += value
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      dispatch(buffer.slice(0, end))
      buffer = buffer.slice(end + 2)
    }
  }
}

let opened = 0

function dispatch(block) {
  let event = 'message'
  const data = []
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim()
    else if (line.startsWith('data:')) data.push(line.slice(5).trimStart())
  }
  if (event === 'hello') {
    // a stream opened again may have missed changes meanwhile: every page loads afresh
    if (opened++ > 0) notify({ kind: 'resync', warnings: [] })
  } else if (event === 'change') {
    notify(JSON.parse(data.join('\n')))
  }
}

function notify(change) {
  live.lastChange = { ...change, at: new Date() }
  for (const fn of listeners) fn(change)
}

// Every page of a list the API hands out ``after`` the last id (stations, registry records).
export async function allPages(path, { limit = 1000, maxPages = 20, id = 'id' } = {}) {
  const out = []
  let after = ''
  for (let i = 0; i < maxPages; i++) {
    const sep = path.includes('?') ? '&' : '?'
    const page = await api('GET', `${path}${sep}limit=${limit}&after=${encodeURIComponent(after)}`)
    out.push(...page)
    if (page.length < limit) break
    after = page[page.length - 1][id]
  }
  return out
}
