// The web page (docs/SERVER.md, "Web page"): the static files of web/, compiled into the binary
// by web/embed.cmake, served at / without a key (the page asks for one), and GET /v1/me, which
// tells the page who a key belongs to so that it can show the physician's or the patient's view.
//
// Only the names in the embedded table are routes: a URL never becomes a file system path, so
// there is nothing to traverse. Every page response carries a Content-Security-Policy that allows
// our own scripts, styles and API only (no inline script, nothing from another origin).
#include <cstring>
#include <string>
#include <string_view>

#include "server/server_impl.h"

namespace hg::server {

// Generated from web/* (build dir: generated/web_assets.cpp).
struct WebAsset {
    const char* name;
    const unsigned char* data;
    std::size_t size;
};
extern const WebAsset kWebAssets[];
extern const std::size_t kWebAssetCount;

namespace {

// The page loads only its own files and talks only to this server. Images it shows are blob: URLs
// it made from fetched previews (fetch sends the key; an <img src> could not) and data: URLs of
// generated PNGs.
const char* const kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

const char* content_type_of(std::string_view name) {
    auto ends = [&](std::string_view ext) { return name.size() >= ext.size() && name.substr(name.size() - ext.size()) == ext; };
    if (ends(".html")) return "text/html; charset=utf-8";
    if (ends(".js")) return "text/javascript; charset=utf-8";
    if (ends(".css")) return "text/css; charset=utf-8";
    if (ends(".svg")) return "image/svg+xml";
    if (ends(".png")) return "image/png";
    return "application/octet-stream";
}

// A regex route that matches exactly this name (httplib's patterns are regular expressions).
std::string exact_pattern(std::string_view path) {
    std::string out;
    for (char c : path) {
        if (std::strchr(".+*?^$()[]{}|\\", c)) out += '\\';
        out += c;
    }
    return out;
}

void send_asset(httplib::Response& res, const WebAsset& a) {
    res.set_header("Content-Security-Policy", kContentSecurityPolicy);
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Referrer-Policy", "no-referrer");
    // The page is small and changes with the binary: always revalidate, never keep a stale script.
    res.set_header("Cache-Control", "no-cache");
    res.set_content(std::string(reinterpret_cast<const char*>(a.data), a.size), content_type_of(a.name));
}

}  // namespace

void HttpServer::Impl::routes_web() {
    for (std::size_t i = 0; i < kWebAssetCount; ++i) {
        const WebAsset& a = kWebAssets[i];
        const std::string name = a.name;
        if (name == "embed.cmake") continue;  // the build step itself, in case it was globbed
        const std::string path = name == "index.html" ? "/" : "/" + name;
        http.Get(exact_pattern(path), wrap(false, [&a](const httplib::Request&, httplib::Response& res, const Principal*) {
                     send_asset(res, a);
                 }));
        if (name == "index.html")
            http.Get(exact_pattern("/index.html"), wrap(false, [&a](const httplib::Request&, httplib::Response& res,
                                                                     const Principal*) { send_asset(res, a); }));
    }

    // Who the key belongs to: the page picks its view from the role (the server still checks the
    // role on every call; the view is a convenience, not a permission).
    http.Get("/v1/me", wrap(true, [](const httplib::Request&, httplib::Response& res, const Principal* p) {
                 res.set_header("Cache-Control", "no-store");
                 res.set_content(dump({{"object", "user"},
                                       {"id", p->user_id},
                                       {"name", p->name},
                                       {"role", service::role_name(p->role)},
                                       {"key_id", p->key_id}}),
                                 "application/json");
             }));
}

}  // namespace hg::server
