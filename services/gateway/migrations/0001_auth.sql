-- API clients (upstream platforms). Keys are random 256-bit tokens, stored as SHA-256 digests:
-- a fast hash is right for high-entropy keys (argon2 is for the low-entropy operator passwords).
CREATE TABLE gateway.api_clients (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    key_prefix    text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    roles         text[] NOT NULL DEFAULT '{upstream_platform}',
    scopes        text[] NOT NULL DEFAULT '{}',
    sources       text[] NOT NULL DEFAULT '{}',
    region_prefix text NOT NULL DEFAULT '' CHECK (region_prefix ~ '^[0-9]{0,12}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);

CREATE TABLE gateway.operators (
    username      text PRIMARY KEY,
    password_hash text NOT NULL,
    roles         text[] NOT NULL,
    region_prefix text NOT NULL DEFAULT '' CHECK (region_prefix ~ '^[0-9]{0,12}$'),
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
