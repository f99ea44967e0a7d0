from orthoxfer.cli import app

app()
