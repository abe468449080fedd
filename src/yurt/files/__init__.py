"""The file store: what ``yurt.toolkit`` outputs and uploads are kept in, served at ``/files/``.

``store`` keeps bytes on disk (content-addressed blobs, one capability record per URL, each with
its expiry); ``location`` says where a runner finds the store; ``http`` is the router's face.
Only ``http`` imports aiohttp: runners import the rest.
"""
