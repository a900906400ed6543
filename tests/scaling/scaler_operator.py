"""The scaler's kopf handlers plus the login the tests need: `kopf run` loads this file
against KMock with the operator's own login (one client, `memo.kube`)."""

import kopf

from speechops import kube
from speechops.scaling import handlers  # noqa: F401  (registers the timer)


@kopf.on.login()
async def login(memo, **kwargs):
    return await kube.login(memo, **kwargs)


@kopf.on.startup()
def settings(settings: kopf.OperatorSettings, **_):
    settings.posting.level = 0
    settings.watching.server_timeout = 10
    settings.persistence.finalizer = "speechops.dev/test-scaler"
