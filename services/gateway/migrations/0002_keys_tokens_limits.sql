-- A client may hold several keys at once: rotation issues a new key and lets the old one live on
-- for an overlap period. Each key has a public id (used to name the key in signed requests) and
-- is stored only as its SHA-256 digest, which is also the HMAC key of signed requests.
CREATE TABLE gateway.api_keys (
    id           text PRIMARY KEY CHECK (id ~ '^k_[A-Za-z0-9_-]{8,40}$'),
    client_id    text NOT NULL REFERENCES gateway.api_clients (id) ON DELETE CASCADE,
    key_prefix   text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_client_idx ON gateway.api_keys (client_id);

INSERT INTO gateway.api_keys (id, client_id, key_prefix, key_hash, created_at, expires_at,
                              revoked_at, last_used_at)
SELECT 'k_' || substr(md5(id), 1, 16), id, key_prefix, key_hash, created_at, expires_at,
       revoked_at, last_used_at
  FROM gateway.api_clients;

ALTER TABLE gateway.api_clients DROP COLUMN key_prefix;
ALTER TABLE gateway.api_clients DROP COLUMN key_hash;
ALTER TABLE gateway.api_clients DROP COLUMN last_used_at;
-- a client that must sign every request (a bare X-API-Key is then refused)
ALTER TABLE gateway.api_clients ADD COLUMN require_signature boolean NOT NULL DEFAULT false;

-- nonces of signed requests seen within the accepted clock skew: a second use is a replay
CREATE TABLE gateway.nonces (
    key_id  text NOT NULL,
    nonce   text NOT NULL,
    seen_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX nonces_seen_idx ON gateway.nonces (seen_at);

-- operators' refresh tokens, stored as digests. Each use rotates the token within its family;
-- a token used twice (stolen and replayed) revokes the whole family.
CREATE TABLE gateway.refresh_tokens (
    digest     bytea PRIMARY KEY,
    username   text NOT NULL REFERENCES gateway.operators (username) ON DELETE CASCADE,
    family     text NOT NULL,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON gateway.refresh_tokens (family);

-- rate-limit windows shared by every gateway replica (see services/gateway/ratelimit.py).
-- UNLOGGED: a crash of PostgreSQL forgets the current minute's counts, which errs on the side
-- of admitting; nothing else depends on them.
CREATE UNLOGGED TABLE gateway.rate_windows (
    key          text NOT NULL,
    window_start timestamptz NOT NULL,
    used         integer NOT NULL,
    last_grant   integer NOT NULL,
    PRIMARY KEY (key, window_start)
);
