"""The scaler's kopf handlers plus the login the tests need: `kopf run` loads this file
against KMock (kopf needs an explicit login handler there)."""

import kopf

from speechops.scaling import handlers  # noqa: F401  (registers the timer)


@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def settings(settings: kopf.OperatorSettings, **_):
    settings.posting.level = 0
    settings.watching.server_timeout = 10
    settings.persistence.finalizer = "speechops.dev/test-scaler"
