//! `cargo run --release --example faas_upstream -- 127.0.0.1:8080`: a minimal HTTP service
//! for trying and benchmarking nmid-faas http functions: `POST /echo` answers the request
//! body, `POST /upper` answers it upper-cased (BENCHMARKS.md's http function).

use actix_web::{web, App, HttpResponse, HttpServer};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    println!("faas_upstream listening on http://{addr}");
    HttpServer::new(|| {
        App::new()
            .route(
                "/echo",
                web::post().to(|body: web::Bytes| async move { body }),
            )
            .route(
                "/upper",
                web::post().to(|body: String| async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body.to_uppercase())
                }),
            )
    })
    .workers(1)
    .bind(addr)?
    .run()
    .await
}
