#!/usr/bin/env python3
"""A plain HTTP service that knows nothing of nmid; examples/faas/http.toml makes its routes
nmid functions. Run: python3 examples/faas/http_service.py [PORT] (default 8080, on
127.0.0.1)."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PRODUCTS = {"1": {"id": "1", "name": "teapot", "price": 12.5}}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        params = json.loads(body or b"{}")
        if self.path == "/products/get":
            product = PRODUCTS.get(str(params.get("id")))
            if product is None:
                return self.reply(404, {"error": "no such product"})
            return self.reply(200, product)
        if self.path == "/echo":
            return self.reply(200, {"function": self.headers.get("X-Nmid-Function"), "params": params})
        self.reply(404, {"error": "no route " + self.path})

    def reply(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
