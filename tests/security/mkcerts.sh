#!/bin/sh
# tests/security/mkcerts.sh DIR: the certificates the security tests use,
# made fresh with openssl (nothing is committed):
#   ca.pem/ca.key            the test CA
#   server.pem/server.key    gristd's certificate (localhost, 127.0.0.1), signed by ca
#   client.pem/client.key    a client certificate signed by ca (mTLS)
#   other-ca.pem             an unrelated CA
#   other-client.pem/.key    a client certificate signed by other-ca
#   other-server.pem/.key    a server certificate signed by other-ca (reload tests)
#   expired-server.pem/.key  signed by ca, valid only in January 2020
#   expired-client.pem/.key  signed by ca, valid only in January 2020
set -eu
d=$1
mkdir -p "$d"
cd "$d"
q() { "$@" >/dev/null 2>&1 || { echo "mkcerts: failed: $*" >&2; exit 1; }; }
ca() { # name subject
    q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.pem" -days 30 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
ca ca "grist test CA"
ca other-ca "another CA"
# a CA database for `openssl ca`, which can sign with dates in the past
for c in ca other-ca; do
    mkdir -p "db-$c"
    : >"db-$c/index.txt"
    echo 1000 >"db-$c/serial"
done
cat >ext.cnf <<'CNF'
[server]
subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth
[client]
extendedKeyUsage = clientAuth
CNF
sign() { # name ca ext [startdate enddate]
    q openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
    cat >"db-$2/ca.cnf" <<CNF
[ca]
default_ca = d
[d]
dir = db-$2
database = db-$2/index.txt
serial = db-$2/serial
new_certs_dir = db-$2
certificate = $2.pem
private_key = $2.key
default_md = sha256
policy = p
unique_subject = no
copy_extensions = none
[p]
commonName = supplied
CNF
    if [ $# -gt 3 ]; then
        dates="-startdate $4 -enddate $5"
    else
        dates="-days 30"
    fi
    # shellcheck disable=SC2086
    q openssl ca -batch -notext -config "db-$2/ca.cnf" $dates -extfile ext.cnf -extensions "$3" \
        -in "$1.csr" -out "$1.pem"
}
sign server ca server
sign client ca client
sign other-client other-ca client
sign other-server other-ca server
sign expired-server ca server 20200101000000Z 20200131000000Z
sign expired-client ca client 20200101000000Z 20200131000000Z
chmod 600 ./*.key
echo "mkcerts: certificates in $d"
