"""`engine serve`: the engine as a web page and an HTTP API.

- service.py: styles by name, stylizers kept warm, frames batched (batching.py: the one thread
  that runs MLX);
- jobs.py: videos and training as jobs, in a private job folder (trainer.py: a training's
  process);
- app.py: the FastAPI app (tokens, errors as JSON, limits); routes.py: the API and the
  webcam's WebSocket; codec.py: images in and out; static/: the page.
"""
