"""The floor: a Flask app that parses the review and admits it, served by the plain gunicorn command line.

`bench.run` starts `gunicorn -k gthread --workers W --threads T --reuse-port --certfile … bench.floor:app`:
nothing of pullcheck's server, logging or metrics is in its path.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request


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


app = create_floor_app()
