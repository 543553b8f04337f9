#!/usr/bin/env bash
# Certificates for dood-proxy reached over a network (mutual TLS; docs/hosts.md), made with openssl:
#
#   scripts/make-host-certs.sh DIR HOST [NAME_OR_IP...]
#
# - DIR/ca.pem, DIR/ca-key.pem: the deployment's CA (made once; kept and reused for every further host).
#   ca-key.pem signs everything: keep it off the Docker hosts (mode 600).
# - DIR/HOST/server-cert.pem, server-key.pem: HOST's dood-proxy (--tls-cert, --tls-key), valid for HOST and
#   every further NAME_OR_IP given (the names and addresses clients use to reach it).
# - DIR/client/cert.pem, key.pem (+ ca.pem): the clients' certificate (Airflow workers and triggerer:
#   hosts.<name>.docker.tls_client_cert / tls_client_key / tls_ca_cert), made once and shared.
# The proxy gets --tls-ca-cert DIR/ca.pem: only certificates this CA signed are let in.
set -euo pipefail

say() { printf 'make-host-certs: %s\n' "$*"; }
die() { printf 'make-host-certs: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $# -ge 2 ]] || die "usage: $0 DIR HOST [NAME_OR_IP...]  (e.g. $0 var/certs gpu-b gpu-b.example.com 10.0.0.12)"
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
DIR=$1; HOST=$2; shift 2
[[ $HOST =~ ^[a-z0-9][a-z0-9_.-]{0,62}$ ]] || die "HOST $HOST: use the host's name under hosts: in the dood config"
DAYS="${DOOD_CERT_DAYS:-825}"
umask 022
mkdir -p "$DIR/$HOST" "$DIR/client"

if [[ ! -s $DIR/ca.pem || ! -s $DIR/ca-key.pem ]]; then
  say "making the CA in $DIR (ca.pem, ca-key.pem)"
  openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days "$DAYS" -subj "/CN=dood-proxy CA" \
    -keyout "$DIR/ca-key.pem" -out "$DIR/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 600 "$DIR/ca-key.pem"
else
  say "reusing the CA in $DIR"
fi

sign() {  # sign KEY_OUT CERT_OUT SUBJECT EXTENSIONS_FILE
  local csr; csr=$(mktemp)
  openssl req -new -newkey rsa:3072 -sha256 -nodes -subj "$3" -keyout "$1" -out "$csr" 2>/dev/null
  openssl x509 -req -in "$csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca-key.pem" -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" \
    -sha256 -extfile "$4" -out "$2" 2>/dev/null
  rm -f "$csr" "$DIR/ca.srl"
  chmod 600 "$1"  # private keys: their owner only (chown them to the user of the process using them)
}

names="DNS:$HOST,DNS:localhost,IP:127.0.0.1"
for extra in "$@"; do
  if [[ $extra =~ ^[0-9.]+$ || $extra == *:* ]]; then names+=",IP:$extra"; else names+=",DNS:$extra"; fi
done
ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
  "$names" >"$ext"
sign "$DIR/$HOST/server-key.pem" "$DIR/$HOST/server-cert.pem" "/CN=$HOST" "$ext"
cp "$DIR/ca.pem" "$DIR/$HOST/ca.pem"
say "server certificate of $HOST's dood-proxy: $DIR/$HOST/server-cert.pem (valid for $names)"

if [[ ! -s $DIR/client/cert.pem || ! -s $DIR/client/key.pem ]]; then
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$ext"
  sign "$DIR/client/key.pem" "$DIR/client/cert.pem" "/CN=dood-airflow" "$ext"
  say "client certificate (Airflow's workers and triggerer): $DIR/client/cert.pem, key.pem"
else
  say "reusing the client certificate in $DIR/client"
fi
cp "$DIR/ca.pem" "$DIR/client/ca.pem"
openssl verify -CAfile "$DIR/ca.pem" "$DIR/$HOST/server-cert.pem" "$DIR/client/cert.pem" >/dev/null \
  || die "the certificates do not verify against $DIR/ca.pem"
say "done: proxy --tls-cert $DIR/$HOST/server-cert.pem --tls-key $DIR/$HOST/server-key.pem --tls-ca-cert $DIR/ca.pem"
# For docker-compose: a path it reads as a path (it takes `var/certs`, without ./, for a volume's name)
case "$DIR" in /* | ./* | ../*) compose_dir="$DIR" ;; *) compose_dir="./$DIR" ;; esac
say "compose: DOOD_CERTS=$compose_dir (or DOOD_UI_CERTS, for the UI's own CA; relative to the checkout)"
