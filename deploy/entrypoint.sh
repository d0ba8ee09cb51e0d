#!/bin/sh
# The container's entrypoint: secrets from files, then the command.
#
# For each AUTHSERVER_<NAME>_FILE (and libpq's PGPASSWORD_FILE) in the environment, the file's
# content becomes AUTHSERVER_<NAME> (PGPASSWORD), trailing newlines dropped, and the _FILE variable
# is removed. That is how Docker secrets (/run/secrets/...) reach the settings without ever being
# written into the environment of the compose file. Other *_FILE variables (SSL_CERT_FILE...)
# are left alone. A variable given both ways, or a file that cannot be read, stops the start with
# one line on standard error. Then the command is exec'd: it replaces this shell (same PID, so
# it is PID 1 in a container and receives SIGTERM itself).
set -eu

names=$(env | sed -n 's/^\(AUTHSERVER_[A-Z0-9_]*_FILE\)=.*/\1/p; s/^\(PGPASSWORD_FILE\)=.*/\1/p')
given='' path='' both=''
for file_var in $names; do
  eval "given=\${$file_var+set}"
  [ "$given" = set ] || continue  # a line of some multi-line value, not a variable
  name=${file_var%_FILE}
  eval "path=\$$file_var"
  eval "both=\${$name+set}"
  if [ "$both" = set ]; then
    echo "error: both $name and $file_var are set: set only one" >&2
    exit 1
  fi
  if [ ! -f "$path" ] || [ ! -r "$path" ]; then
    echo "error: $file_var names $path, which is not a readable file" >&2
    exit 1
  fi
  value=$(cat "$path")
  export "$name=$value"
  unset "$file_var"
done

if [ "$#" -eq 0 ]; then
  echo "error: no command given" >&2
  exit 1
fi
exec "$@"
