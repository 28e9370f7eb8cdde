#!/bin/sh
# Makes the test CA and the server certificate for localhost and 127.0.0.1
# that tests/test_proxy_*.py use; run it from this directory to renew them.
set -eu
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 36500 \
    -keyout ca.key -out ca.pem -subj "/CN=ace-mail test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -sha256 \
    -keyout server.key -out server.csr -subj "/CN=localhost"
printf '%s\n' \
    "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" > server.ext
openssl x509 -req -sha256 -days 36500 -in server.csr -CA ca.pem -CAkey ca.key \
    -set_serial 2 -extfile server.ext -out server.pem
rm server.csr server.ext
