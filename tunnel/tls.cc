#include "tunnel/tls.h"

#include <array>
#include <cstdio>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace outpost::tunnel {
namespace ssl = boost::asio::ssl;

namespace {

Result<std::string> spki_pin(X509* cert) {
  unsigned char* der = nullptr;
  const int size = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
  if (size <= 0) return internal_error("cannot encode a certificate's public key");
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int digest_size = 0;
  const bool ok = EVP_Digest(der, static_cast<size_t>(size), digest.data(), &digest_size,
                             EVP_sha256(), nullptr) == 1;
  OPENSSL_free(der);
  if (!ok) return internal_error("SHA-256 failed");
  std::array<unsigned char, 64> encoded{};
  const int encoded_size =
      EVP_EncodeBlock(encoded.data(), digest.data(), static_cast<int>(digest_size));
  return "sha256/" + std::string(reinterpret_cast<const char*>(encoded.data()),
                                 static_cast<size_t>(encoded_size));
}

}  // namespace

Result<std::shared_ptr<ssl::context>> make_client_tls_context(const ClientTlsOptions& options) {
  for (const auto& pin : options.spki_pins) {
    if (pin.rfind("sha256/", 0) != 0 || pin.size() != 7 + 44) {
      return invalid_argument("pin '" + pin +
                              "' is not of the form sha256/<base64 of 32 bytes> "
                              "(see `openssl x509 -pubkey | openssl pkey -pubin -outform der | "
                              "openssl dgst -sha256 -binary | base64`)");
    }
  }
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  context->set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  if (options.ca_file.empty()) {
    context->set_default_verify_paths(ec);
    if (ec) return internal_error("cannot load the system's trusted roots: " + ec.message());
  } else {
    context->load_verify_file(options.ca_file, ec);
    if (ec) {
      return invalid_argument("cannot load CA file " + options.ca_file + ": " + ec.message());
    }
  }
  return context;
}

Result<std::shared_ptr<ssl::context>> make_server_tls_context(const std::string& cert_file,
                                                              const std::string& key_file) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_compression |
                       ssl::context::single_dh_use);
  boost::system::error_code ec;
  context->use_certificate_chain_file(cert_file, ec);
  if (ec) return invalid_argument("cannot load certificate " + cert_file + ": " + ec.message());
  context->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) return invalid_argument("cannot load private key " + key_file + ": " + ec.message());
  return context;
}

Status check_spki_pins(ssl_st* ssl, const std::vector<std::string>& pins) {
  if (pins.empty()) return {};
  STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl);
  if (chain == nullptr) return Error(ErrorCode::kUnauthenticated, "no verified chain to pin");
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    auto pin = spki_pin(sk_X509_value(chain, i));
    if (!pin.ok()) return pin.error();
    for (const auto& wanted : pins) {
      if (CRYPTO_memcmp(wanted.data(), pin->data(), std::min(wanted.size(), pin->size())) == 0 &&
          wanted.size() == pin->size()) {
        return {};
      }
    }
  }
  return Error(ErrorCode::kUnauthenticated,
               "the server's certificate chain matches none of the configured public-key pins");
}

Result<std::string> spki_pin_of_certificate_file(const std::string& pem_file) {
  FILE* file = std::fopen(pem_file.c_str(), "r");
  if (file == nullptr) return invalid_argument("cannot open " + pem_file);
  X509* cert = PEM_read_X509(file, nullptr, nullptr, nullptr);
  std::fclose(file);
  if (cert == nullptr) return invalid_argument(pem_file + " holds no PEM certificate");
  auto pin = spki_pin(cert);
  X509_free(cert);
  return pin;
}

std::string verify_failure_reason(ssl_st* ssl) {
  const long result = SSL_get_verify_result(ssl);
  if (result == X509_V_OK) return {};
  return X509_verify_cert_error_string(result);
}

}  // namespace outpost::tunnel
