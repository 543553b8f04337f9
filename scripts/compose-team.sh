#!/usr/bin/env bash
# Per-team access in the compose stack (FAB auth manager, docs/compose.md "Per-team access"): a role that may
# read and run the given DAGs and nothing of the others.
#   scripts/compose-team.sh ROLE DAG_ID...          # e.g. scripts/compose-team.sh team_a dood_breast_cancer
#   COMPOSE="docker-compose -p NAME --env-file FILE" scripts/compose-team.sh ...   # another stack
# The role gets FAB's Viewer and User permissions *except* the ones on every DAG (the `DAGs` resource), and
# read, edit, delete on each `DAG:<dag_id>` given: its users see only those DAGs in Airflow's UI and API, and
# on the DooD page, Container and Model metrics tabs (which ask Airflow's auth manager per DAG). Run it again to
# add DAGs (it only adds). Then give a user the role:
#   docker-compose exec airflow-apiserver airflow users create -r ROLE -u alice -p ... -f Alice -l A -e alice@example.org
# A DAG's permission exists once the dag-processor has parsed it: create the role after the DAG shows up.
set -euo pipefail

NAME=compose-team
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die
(($# >= 2)) || die "usage: $0 ROLE DAG_ID... (the FAB auth manager: AIRFLOW_AUTH_MANAGER in .env)"
read -r -a compose <<<"${COMPOSE:-docker-compose}"
cd "$ROOT"
"${compose[@]}" exec -T airflow-apiserver python - "$@" <<'PYEOF'
import sys

from airflow.configuration import conf

if not conf.get("core", "auth_manager").endswith("FabAuthManager"):
    sys.exit("compose-team: the stack runs the simple auth manager, which has no per-DAG rules: set "
             "AIRFLOW_AUTH_MANAGER=airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager in .env")
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
from airflow.providers.fab.www.security import permissions

role_name, dag_ids = sys.argv[1], sys.argv[2:]
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    if role_name in ("Admin", "Op", "User", "Viewer", "Public"):
        sys.exit(f"compose-team: {role_name} is one of FAB's own roles: give the team a role of its own")
    role = sm.find_role(role_name) or sm.add_role(role_name)
    for base in ("Viewer", "User"):
        for perm in sm.find_role(base).permissions:
            if perm.resource.name != permissions.RESOURCE_DAG:  # never every DAG
                sm.add_permission_to_role(role, perm)
    for dag_id in dag_ids:
        resource = permissions.resource_name(dag_id, permissions.RESOURCE_DAG)  # DAG:<dag_id>
        if sm.get_resource(resource) is None:
            sys.exit(f"compose-team: no DAG {dag_id!r} known to Airflow yet ({resource}): wait until it is parsed")
        for action in (permissions.ACTION_CAN_READ, permissions.ACTION_CAN_EDIT, permissions.ACTION_CAN_DELETE):
            sm.add_permission_to_role(role, sm.create_permission(action, resource))
    print(f"compose-team: role {role_name}: DAGs {', '.join(dag_ids)}")
PYEOF
