#!/bin/sh
# Generates a throw-away test CA and a server certificate for the fake
# providers, with the openssl CLI:
#   DIR/ca.pem, DIR/ca.key         test CA
#   DIR/server.pem, DIR/server.key server cert for api.hubapi.com,
#       login.salesforce.com, *.my.salesforce.com, api.echo.test, localhost,
#       127.0.0.1 (valid 2 days)
# Usage: certs.sh DIR. Idempotent: does nothing when all four files exist.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
if [ -s "$dir/ca.pem" ] && [ -s "$dir/ca.key" ] && [ -s "$dir/server.pem" ] && [ -s "$dir/server.key" ]; then
    exit 0
fi
command -v openssl >/dev/null 2>&1 || { echo "$0: openssl not found" >&2; exit 1; }

work=$(mktemp -d "$dir/.certs.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

cat >"$work/ca.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = plugboard test CA
O = plugboard tests
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF

cat >"$work/server.ext" <<'CNF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:api.hubapi.com, DNS:login.salesforce.com, DNS:*.my.salesforce.com, DNS:api.echo.test, DNS:localhost, IP:127.0.0.1
CNF

q() { "$@" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }; }

q openssl req -x509 -config "$work/ca.cnf" -newkey rsa:2048 -nodes -sha256 -days 2 \
    -keyout "$work/ca.key" -out "$work/ca.pem"
q openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost/O=plugboard tests" \
    -keyout "$work/server.key" -out "$work/server.csr"
q openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 2 -sha256 -extfile "$work/server.ext" \
    -out "$work/server.pem"
chmod 600 "$work/ca.key" "$work/server.key"

# publish: keys first, certificates last (the presence check looks at all four)
for f in ca.key server.key ca.pem server.pem; do
    mv -f "$work/$f" "$dir/$f"
done
