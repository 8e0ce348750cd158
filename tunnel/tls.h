// TLS set-up for both ends of the tunnel. Verification is always on: there is no switch that
// turns it off. A client trusts either the system roots or, when given, only the CA file, checks
// the host name and sends SNI, and may further pin the server to one or more public keys
// (SHA-256 of the DER SubjectPublicKeyInfo of any certificate in the verified chain, written
// "sha256/<base64>", as HPKP and curl's --pinnedpubkey do). TLS 1.2 is the oldest version allowed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "common/result.h"

struct ssl_st;

namespace outpost::tunnel {

struct ClientTlsOptions {
  std::string ca_file;                 // PEM bundle; empty means the system's roots
  std::vector<std::string> spki_pins;  // "sha256/<base64>"; empty means no pinning
};

Result<std::shared_ptr<boost::asio::ssl::context>> make_client_tls_context(
    const ClientTlsOptions& options);

// cert_file holds the certificate chain (leaf first), key_file its private key, both PEM.
Result<std::shared_ptr<boost::asio::ssl::context>> make_server_tls_context(
    const std::string& cert_file, const std::string& key_file);

// After a verified handshake: succeeds when `pins` is empty or one of them matches a key in the
// peer's verified chain.
Status check_spki_pins(ssl_st* ssl, const std::vector<std::string>& pins);

// "sha256/<base64>" for the first certificate in a PEM file: what an operator puts in a pin.
Result<std::string> spki_pin_of_certificate_file(const std::string& pem_file);

// Why verification failed, from OpenSSL's verify result ("certificate has expired", ...).
std::string verify_failure_reason(ssl_st* ssl);

}  // namespace outpost::tunnel
