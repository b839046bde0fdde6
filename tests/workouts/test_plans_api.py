"""Workout plans over the API: create in every form, read, change, delete, errors as
{"detail"}, a plan on a ride (PUT /api/streams/{name}) — and the plans' authorization table
(docs/security.md: "Who may do what"), every route for every role.

``owner`` owns the private plan ``priv`` and the private stream ``priv``; ``viewer`` holds a
Share from ``owner`` (reads their streams, workouts and plans); ``shared`` is in the plan's
``shared_with``; ``readonly`` and ``publishonly`` are tokens of ``owner`` with only the
``read`` / ``publish`` scope; ``manager`` has ``streams.manage_all_streams``; ``other`` is just
another athlete.
"""

import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import AsyncClient

from streams.access import plans as plan_rule
from streams.access.identity import Actor
from streams.models import ApiToken, Share
from streams.store import services as store
from tests.workouts.test_plans import DATA
from workouts.models import WorkoutPlan
from workouts.plans import steps_from_text, stored_steps

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = ("anonymous", "owner", "other", "viewer", "shared", "readonly", "publishonly", "manager", "superuser")
ISSUE_TEXT = "10m 55%\n4x(8m 105%, 4m 55%)\n10m 50%"


@pytest.fixture
async def world(r, settings):
    settings.STREAMS_PUBLIC_READ = False

    def make():
        User = get_user_model()
        users = {name: User.objects.create_user(name) for name in ("owner", "other", "viewer", "shared", "manager")}
        users["superuser"] = User.objects.create_superuser("root", password="x")
        users["manager"].user_permissions.add(Permission.objects.get(codename="manage_all_streams"))
        Share.objects.create(owner=users["owner"], viewer=users["viewer"])
        tokens = {name: ApiToken.issue(user=user)[1] for name, user in users.items()}
        tokens["readonly"] = ApiToken.issue(user=users["owner"], scopes=["read"])[1]
        tokens["publishonly"] = ApiToken.issue(user=users["owner"], scopes=["publish"])[1]
        steps = stored_steps(steps_from_text(ISSUE_TEXT))
        priv = WorkoutPlan.objects.create(owner=users["owner"], name="priv", steps=steps)
        priv.shared_with.add(users["shared"])
        pub = WorkoutPlan.objects.create(owner=users["owner"], name="pub", steps=steps, public=True)
        return users, tokens, {"priv": priv.pk, "pub": pub.pk}

    users, tokens, plans = await sync_to_async(make)()
    await store.stream_publish(name="priv", entries=[{"power": "200"}], actor=Actor(user_id=users["owner"].pk, username="owner"))
    return users, tokens, plans


async def call(tokens, role, method, path, body=None):
    headers = {} if role == "anonymous" else {"Authorization": f"Bearer {tokens[role]}"}
    kwargs = {"headers": headers}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return await getattr(AsyncClient(), method)(path, **kwargs)


def row(route, *statuses):
    assert len(statuses) == len(ROLES), route
    return [pytest.param(route, role, status, id=f"{route}-{role}") for role, status in zip(ROLES, statuses)]


# The plans' authorization table.
#          route                     anon owner other viewer shared readonly publishonly manager super
TABLE = [
    *row("plan create",               401, 201, 201, 201, 201, 403, 403, 201, 201),
    *row("plan list",                 401, 200, 200, 200, 200, 200, 403, 200, 200),
    *row("plan get priv",             401, 200, 404, 200, 200, 200, 403, 200, 200),
    *row("plan get pub",              401, 200, 200, 200, 200, 200, 403, 200, 200),
    *row("plan put priv",             401, 200, 404, 403, 403, 403, 403, 403, 200),
    *row("plan put pub",              401, 200, 403, 403, 403, 403, 403, 403, 200),
    *row("plan delete priv",          401, 204, 404, 403, 403, 403, 403, 403, 204),
    *row("plan get absent",           401, 404, 404, 404, 404, 404, 403, 404, 404),
    # PUT /api/streams/{name} {"plan": id}: the stream's rule first, then the plan's (400).
    *row("stream priv plan priv",     401, 200, 404, 403, 404, 403, 403, 200, 200),
    *row("own stream plan priv",      401, 201, 400, 201, 201, 403, 403, 201, 201),
    *row("own stream plan pub",       401, 201, 201, 201, 201, 403, 403, 201, 201),
    *row("own stream plan absent",    401, 400, 400, 400, 400, 403, 403, 400, 400),
]

# What each role's GET /api/plans lists (of priv and pub).
LISTS = {"owner": ["priv", "pub"], "other": ["pub"], "viewer": ["priv", "pub"], "shared": ["priv", "pub"],
         "readonly": ["priv", "pub"], "manager": ["priv", "pub"], "superuser": ["priv", "pub"]}


async def run_route(world, route, role):
    _, tokens, plans = world
    own_stream = f"{role}-ride"
    match route:
        case "plan create":
            return await call(tokens, role, "post", "/api/plans", {"name": "new", "text": "1m 50%"})
        case "plan list":
            return await call(tokens, role, "get", "/api/plans")
        case "plan get priv" | "plan get pub":
            return await call(tokens, role, "get", f"/api/plans/{plans[route.split()[-1]]}")
        case "plan get absent":
            return await call(tokens, role, "get", f"/api/plans/{plans['pub'] + 100}")
        case "plan put priv" | "plan put pub":
            return await call(tokens, role, "put", f"/api/plans/{plans[route.split()[-1]]}", {"name": "renamed"})
        case "plan delete priv":
            return await call(tokens, role, "delete", f"/api/plans/{plans['priv']}")
        case "stream priv plan priv":
            return await call(tokens, role, "put", "/api/streams/priv", {"plan": plans["priv"], "plan_start": 60})
        case "own stream plan priv" | "own stream plan pub":
            return await call(tokens, role, "put", f"/api/streams/{own_stream}", {"plan": plans[route.split()[-1]]})
        case "own stream plan absent":
            return await call(tokens, role, "put", f"/api/streams/{own_stream}", {"plan": plans["pub"] + 100})
    raise AssertionError(route)


@pytest.mark.parametrize("route,role,expected", TABLE)
async def test_who_may_do_what_with_plans(world, route, role, expected):
    resp = await run_route(world, route, role)
    assert resp.status_code == expected, resp.content
    if expected >= 400:
        assert resp.json()["detail"]


@pytest.mark.parametrize("role", [r for r in ROLES if r not in ("anonymous", "publishonly")])
async def test_each_role_lists_only_the_plans_it_may_read(world, role):
    _, tokens, _ = world
    body = (await call(tokens, role, "get", "/api/plans")).json()
    assert sorted(p["name"] for p in body["plans"]) == LISTS[role] and body["count"] == len(LISTS[role])


async def test_a_plan_the_caller_may_not_read_is_refused_on_a_stream_without_writing_it(world):
    _, tokens, plans = world
    resp = await call(tokens, "other", "put", "/api/streams/other-ride", {"plan": plans["priv"], "ftp": 250})
    assert resp.status_code == 400 and resp.json()["detail"] == f"plan: no plan {plans['priv']} that you may read"
    assert (await call(tokens, "other", "get", "/api/streams/other-ride")).status_code == 404  # nothing created


# --- the API, form by form --------------------------------------------------------------------
async def test_create_from_text_json_and_zwo_and_read_back(world):
    _, tokens, _ = world
    resp = await call(tokens, "owner", "post", "/api/plans", {"name": "Threshold", "text": ISSUE_TEXT})
    assert resp.status_code == 201
    created = resp.json()
    assert created["id"] and created["name"] == "Threshold" and created["owner"] == "owner"
    assert len(created["steps"]) == 10 and created["duration_s"] == 600 + 4 * 720 + 600
    assert created["steps"][1] == {"name": "8 min at 105% FTP (1/4)", "duration_s": 480, "target": {"pct_ftp": [105.0, 105.0]}}
    assert created["public"] is False and created["shared_with"] == [] and created["may_change"] is True
    got = (await call(tokens, "owner", "get", f"/api/plans/{created['id']}")).json()
    assert got == created

    steps = [{"name": "sweet spot", "duration_s": 1200, "target": {"watts": [230, 245]}, "cadence": [88, 95]}]
    resp = await call(tokens, "owner", "post", "/api/plans", {"name": "SS", "steps": steps, "shared_with": ["other"]})
    assert resp.status_code == 201 and resp.json()["steps"] == steps and resp.json()["shared_with"] == ["other"]
    as_other = (await call(tokens, "other", "get", f"/api/plans/{resp.json()['id']}")).json()
    assert as_other["may_change"] is False and "shared_with" not in as_other

    resp = await call(tokens, "owner", "post", "/api/plans", {"zwo": (DATA / "sweet_spot.zwo").read_text()})
    assert resp.status_code == 201 and resp.json()["name"] == "Sweet spot 3x10" and len(resp.json()["steps"]) == 5 + 6 + 2 + 3


@pytest.mark.parametrize("body,detail", [
    ({"name": "x"}, 'a plan needs its steps: "steps" (JSON), "text" or "zwo"'),
    ({"name": "x", "text": "1m 50%", "steps": []}, "give the steps in one form: steps, text or zwo (got steps, text)"),
    ({"text": "1m 50%"}, "name is required"),
    ({"name": "  ", "text": "1m 50%"}, "name is required"),
    ({"name": "x", "text": "10m 55%\n4x(8m 105%, 4m 55%"}, "line 2 ('4x(8m 105%, 4m 55%'): a repeat ends with ')'"),
    ({"name": "x", "steps": [{"duration_s": 60, "target": {"pct_ftp": [60, 50]}}]}, "steps.0.target: "),
    ({"name": "x", "steps": [{"duration_s": 60, "target": {"pct_ftp": [50, 60], "watts": [1, 2]}}]}, "exactly one"),
    ({"name": "x", "steps": []}, "at least one step"),
    ({"name": "x", "steps": "10m 50%"}, "steps: "),
    ({"name": "x", "zwo": "<workout_file>"}, "ZWO: not well-formed XML"),
    ({"name": "x", "text": "1m 50%", "shared_with": ["nobody"]}, "shared_with: no user named 'nobody'"),
    ({"name": "a\x00b", "text": "1m 50%"}, "NUL"),
    ({"name": "x" * 201, "text": "1m 50%"}, "name: "),
])
async def test_bad_plans_are_400_naming_the_problem(world, body, detail):
    _, tokens, _ = world
    resp = await call(tokens, "owner", "post", "/api/plans", body)
    assert resp.status_code == 400, resp.content
    assert detail in resp.json()["detail"]
    assert await WorkoutPlan.objects.acount() == 2  # nothing created


async def test_a_body_that_is_not_json_is_400(world):
    _, tokens, _ = world
    resp = await AsyncClient().post("/api/plans", data=b"{not json", content_type="application/json",
                                    headers={"Authorization": f"Bearer {tokens['owner']}"})
    assert resp.status_code == 400 and resp.json()["detail"]


async def test_put_changes_only_what_it_gives_and_delete_removes(world):
    _, tokens, plans = world
    path = f"/api/plans/{plans['priv']}"
    before = (await call(tokens, "owner", "get", path)).json()
    resp = await call(tokens, "owner", "put", path, {"text": "20m 90-95% @90rpm"})
    assert resp.status_code == 200
    after = resp.json()
    assert after["name"] == "priv" and after["shared_with"] == ["shared"] and after["public"] is False
    assert after["steps"] == [{"name": "20 min at 90-95% FTP @90 rpm", "duration_s": 1200,
                               "target": {"pct_ftp": [90.0, 95.0]}, "cadence": [90, 90]}]
    assert after["updated_at"] >= before["updated_at"]
    resp = await call(tokens, "owner", "put", path, {"name": "P", "public": True, "shared_with": []})
    assert (resp.json()["name"], resp.json()["public"], resp.json()["shared_with"]) == ("P", True, [])
    assert len(resp.json()["steps"]) == 1
    resp = await call(tokens, "owner", "put", path, {"text": "1m nonsense"})
    assert resp.status_code == 400 and "line 1" in resp.json()["detail"]
    assert (await call(tokens, "owner", "delete", path)).status_code == 204
    assert (await call(tokens, "owner", "get", path)).status_code == 404
    assert (await call(tokens, "owner", "delete", path)).status_code == 404


async def test_the_list_filters_by_owner_and_pages(world):
    _, tokens, _ = world
    for i in range(3):
        await call(tokens, "other", "post", "/api/plans", {"name": f"o{i}", "text": "1m 50%"})
    body = (await call(tokens, "manager", "get", "/api/plans?owner=other&limit=2")).json()
    assert body["count"] == 3 and [p["name"] for p in body["plans"]] == ["o2", "o1"]
    body = (await call(tokens, "manager", "get", "/api/plans?owner=other&limit=2&offset=2")).json()
    assert [p["name"] for p in body["plans"]] == ["o0"]
    assert (await call(tokens, "manager", "get", "/api/plans?limit=0")).status_code == 400


# --- a plan on a ride -------------------------------------------------------------------------
async def test_a_stream_carries_a_plan_and_its_start_in_its_json(world):
    _, tokens, plans = world
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"plan": plans["priv"], "plan_start": 90})
    assert resp.status_code == 200 and (resp.json()["plan"], resp.json()["plan_start"]) == (plans["priv"], 90)
    got = (await call(tokens, "viewer", "get", "/api/streams/priv")).json()
    assert (got["plan"], got["plan_start"], got["length"]) == (plans["priv"], 90, 1)
    # Changing the FTP keeps the plan; a new plan keeps the start; null start = the first entry.
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"ftp": 250})
    assert (resp.json()["plan"], resp.json()["plan_start"], resp.json()["ftp"]) == (plans["priv"], 90, 250)
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"plan": plans["pub"]})
    assert (resp.json()["plan"], resp.json()["plan_start"]) == (plans["pub"], 90)
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"plan_start": None})
    assert (resp.json()["plan"], resp.json()["plan_start"]) == (plans["pub"], None)
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"plan_start": 30, "plan": None})
    assert (resp.json()["plan"], resp.json()["plan_start"]) == (None, None)  # no plan: no start
    info = (await store.stream_info_batch(names=["priv"]))["priv"]
    assert (info.meta.plan, info.meta.plan_start, info.meta.ftp) == (None, None, 250)


async def test_a_group_session_shares_one_plan_and_start(world):
    _, tokens, plans = world
    for rider in ("owner", "other", "viewer"):
        resp = await call(tokens, rider, "put", f"/api/streams/group-{rider}", {"plan": plans["pub"], "plan_start": 0})
        assert resp.status_code == 201
    metas = await store.stream_meta(names=["group-owner", "group-other", "group-viewer"])
    assert {(m.plan, m.plan_start) for m in metas.values()} == {(plans["pub"], 0)}


@pytest.mark.parametrize("body,detail", [
    ({"plan": 0}, "plan: Input should be greater than or equal to 1"),
    ({"plan": "seven"}, "plan: "),
    ({"plan_start": -1}, "plan_start: Input should be greater than or equal to 0"),
    ({"plan_start": 10**9}, "plan_start: Input should be less than or equal to 604800"),
])
async def test_bad_plan_settings_are_400(world, body, detail):
    _, tokens, _ = world
    resp = await call(tokens, "owner", "put", "/api/streams/priv", body)
    assert resp.status_code == 400 and detail in resp.json()["detail"]


async def test_plans_are_in_the_openapi_schema(world):
    schema = (await AsyncClient().get("/api/openapi.json")).json()
    assert {"post", "get"} <= set(schema["paths"]["/api/plans"])
    assert {"get", "put", "delete"} <= set(schema["paths"]["/api/plans/{plan_id}"])
    components = schema["components"]["schemas"]
    assert {"text", "zwo", "steps", "shared_with"} <= set(components["PlanIn"]["properties"])
    assert {"duration_s", "target", "cadence", "name"} <= set(components["Step"]["properties"])
    assert {"pct_ftp", "watts"} <= set(components["Target"]["properties"])
    assert {"plan", "plan_start"} <= set(components["SettingsIn"]["properties"])
    assert {"plan", "plan_start"} <= set(components["StreamOut"]["properties"])


async def test_without_a_registered_plan_rule_no_plan_is_set(world, monkeypatch):
    """The streams floor never imports workouts: the rule comes from WorkoutsConfig.ready."""
    _, tokens, plans = world
    assert plan_rule._rule, "registered at start-up"
    monkeypatch.setattr(plan_rule, "_rule", [])
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"plan": plans["priv"]})
    assert resp.status_code == 400 and resp.json()["detail"] == "plan: workout plans are not available on this server"
