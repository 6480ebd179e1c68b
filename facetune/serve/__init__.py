"""A prediction service on Ray Serve: POST /predict, GET /health, GET /models and a web page at /.

    facetune serve --models runs/results                  # http://127.0.0.1:8000/
    serve run raycfg/serve.yaml                           # the same app from a config file

Modules: uploads (request checks and image decoding), faces (the face-finding seam),
inference (models -> JSON), app (the deployments and `build_app`).
"""
