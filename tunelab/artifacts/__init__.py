from .store import ArtifactError, load_artifact, read_manifest, write_artifact

__all__ = ["ArtifactError", "load_artifact", "read_manifest", "write_artifact"]
