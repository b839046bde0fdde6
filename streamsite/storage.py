"""Static files storage: servestatic's compressed manifest storage, with hashed names in
every mode. Django gives plain names while DEBUG is on; here ``./dev.sh serve`` (DEBUG) serves
the same collected, hashed, gzip- and brotli-compressed files as production, with the same
far-future caching. ``./dev.sh serve`` collects again when the dependencies (the admin's and
Swagger UI's files) or the apps' own ``static/`` files (the live pages' CSS and JS) change."""

from servestatic.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    def url(self, name, force=False):
        return super().url(name, force=True)
