"""Static files storage: servestatic's compressed manifest storage, with hashed names in
every mode. Django gives plain names while DEBUG is on; here ``./dev.sh serve`` (DEBUG) serves
the same collected, hashed, gzip- and brotli-compressed files as production, with the same
far-future caching. Our own pages carry no static files; the admin's and Swagger UI's change
only with the dependencies, and ``./dev.sh serve`` collects them again when those change."""

from servestatic.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    def url(self, name, force=False):
        return super().url(name, force=True)
