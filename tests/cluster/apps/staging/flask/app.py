# A Flask app with no Procfile: the python buildpack serves app:app with gunicorn.
import os

import flask

app = flask.Flask(__name__)


@app.route("/")
def index():
    return flask.jsonify(app="flask", venv=os.environ.get("VIRTUAL_ENV", ""), pid=os.getpid())
