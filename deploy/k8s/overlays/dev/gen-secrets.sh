#!/usr/bin/env sh
# Writes this overlay's local secrets (ignored by git): random keys, a database password and a
# self-signed certificate for the gateway. Run once; run again to rotate them.
set -eu
cd "$(dirname "$0")"
rand() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
pw=$(rand)
umask 077
cat > db.env <<ENV
password=$pw
url=postgresql://qianshao:$pw@timescaledb:5432/qianshao
ENV
cat > app.env <<ENV
internal-secret=$(rand)
jwt-secret=$(rand)
confirm-secret=$(rand)
callback-token=$(rand)
ENV
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=qianshao.example.gov.cn" \
  -keyout tls.key -out tls.crt 2>/dev/null
echo "wrote db.env, app.env, tls.crt and tls.key"
