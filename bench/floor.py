"""The floor: a do-nothing admission webhook (parse the review, admit), served exactly like pullcheck."""

from __future__ import annotations

import argparse
import json

from flask import Flask, Response, request

from webhook.server import ServerOptions, serve


def create_floor_app() -> Flask:
    app = Flask("floor")

    @app.post("/validate")
    def validate() -> Response:
        review = json.loads(request.get_data())
        answer = {"uid": review["request"]["uid"], "allowed": True}
        body = {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": answer}
        return Response(json.dumps(body), mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> str:
        return "ok\n"

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    return serve(
        ServerOptions("127.0.0.1", args.port, args.cert, args.key, log_level="WARNING"), create_floor_app
    )


if __name__ == "__main__":
    raise SystemExit(main())
