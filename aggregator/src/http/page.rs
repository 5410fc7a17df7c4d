//! The built-in page: `GET /`, `/app.js`, `/style.css`, compiled into the binary.
//!
//! Role: serves the three files under `static/` (embedded with `include_str!`) with their
//! content types, `X-Content-Type-Options: nosniff`, and on the page a Content-Security-Policy
//! that allows only this origin — no CDN, no external fonts, no inline script — so the page
//! works offline and data shown in it can never run as script. Touches nothing else.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use actix_web::{HttpResponse, web};

/// The page.
pub const INDEX_HTML: &str = include_str!("static/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("static/app.js");
/// Its style sheet.
pub const STYLE_CSS: &str = include_str!("static/style.css");

/// Only this origin: scripts, styles, fetches; images also as `data:` (the empty favicon).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Registers the page routes.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/app.js", web::get().to(app_js))
        .route("/style.css", web::get().to(style_css));
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((CONTENT_SECURITY_POLICY, CSP))
        .body(INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
