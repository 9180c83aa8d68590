from vectorlay.app.cli import entry

entry()
