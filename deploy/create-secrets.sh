#!/usr/bin/env bash
# Creates the Secrets the platform reads (namespace lap), each only when it does not exist:
# existing values are never replaced (new LAP_ENCRYPTION_KEYS would leave every stored secret
# unreadable; rotate with `manage.py lap_reencrypt`, deploy/README.md).
#
#   deploy/create-secrets.sh [--bundled] [kubectl options, e.g. --context kind-lap]
#
#   lap-keys      LAP_MASTER_KEY, DJANGO_SECRET_KEY, LAP_ENCRYPTION_KEYS: fresh random values;
#                 LITELLM_API_KEY as well when it is set in this environment.
#   lap-database  DATABASE_URL and REDIS_URL: taken from this environment (your PostgreSQL and
#                 Redis), or with --bundled pointing at the bundled overlay's lap-postgres and
#                 lap-redis;
#   lap-postgres  (--bundled) the bundled PostgreSQL's password, the one in DATABASE_URL.
#
# Values reach kubectl in files only this user can read, never on a command line, and are
# never printed. Needs kubectl and python3 (for the random values).
set -euo pipefail

bundled=false
if [[ ${1:-} == --bundled ]]; then
    bundled=true
    shift
fi
kubectl=(kubectl "$@")
namespace=lap
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "create-secrets: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is required (it makes the random values)"

secret_exists() { "${kubectl[@]}" get secret --namespace "$namespace" "$1" >/dev/null 2>&1; }
token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
fernet_key() { python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'; }

workdir=$(mktemp -d)  # mode 0700
trap 'rm -rf "$workdir"' EXIT

create() {  # create NAME: the Secret NAME from $workdir/NAME.env (KEY=VALUE lines)
    "${kubectl[@]}" create secret generic "$1" --namespace "$namespace" \
        --from-env-file="$workdir/$1.env" >/dev/null
    echo "created Secret $namespace/$1"
}

# Refuse before creating anything.
if ! $bundled && [[ -z ${DATABASE_URL:-} || -z ${REDIS_URL:-} ]] && ! secret_exists lap-database
then
    die "set DATABASE_URL and REDIS_URL (your PostgreSQL and Redis), or use --bundled"
fi

# The namespaces first (idempotent): the Secrets live in one of them.
"${kubectl[@]}" apply -f "$here/kustomize/base/namespaces.yaml" >/dev/null

if secret_exists lap-keys; then
    echo "Secret $namespace/lap-keys exists: kept"
else
    {
        echo "LAP_MASTER_KEY=lap-$(token)"
        echo "DJANGO_SECRET_KEY=$(token)"
        echo "LAP_ENCRYPTION_KEYS=$(fernet_key)"
        if [[ -n ${LITELLM_API_KEY:-} ]]; then echo "LITELLM_API_KEY=$LITELLM_API_KEY"; fi
    } > "$workdir/lap-keys.env"
    create lap-keys
fi

if $bundled; then
    if secret_exists lap-postgres && secret_exists lap-database; then
        echo "Secrets $namespace/lap-postgres and $namespace/lap-database exist: kept"
    elif secret_exists lap-postgres || secret_exists lap-database; then
        die "only one of lap-postgres and lap-database exists; they share the database" \
            "password: delete the other one too, then run this again"
    else
        password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
        echo "password=$password" > "$workdir/lap-postgres.env"
        {
            echo "DATABASE_URL=postgres://lap:$password@lap-postgres.$namespace.svc:5432/lap"
            echo "REDIS_URL=redis://lap-redis.$namespace.svc:6379/0"
        } > "$workdir/lap-database.env"
        create lap-postgres
        create lap-database
    fi
elif secret_exists lap-database; then
    echo "Secret $namespace/lap-database exists: kept"
else
    {
        echo "DATABASE_URL=$DATABASE_URL"
        echo "REDIS_URL=$REDIS_URL"
    } > "$workdir/lap-database.env"
    create lap-database
fi
