"""The fixed names of an embeddings folder, shared by its writer (``embed --ray``, in
``distributed/``) and its reader (``index push``), so the two cannot drift apart."""

FORMAT = "distilmarco-embeddings/1"  # the manifest's "format"; a new layout gets a new number
MANIFEST = "manifest.json"
