# Helpers shared by the scripts (sourced, not run).

# mysql://user[:pass]@host:port[/db] → mariadb CLI arguments, one per line.
mysql_args() {
  python3 - "$1" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
args = ["-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306), "-u", urllib.parse.unquote(u.username or "root"), "--protocol=TCP"]
if u.password:
    args.append("-p" + urllib.parse.unquote(u.password))
print("\n".join(args))
PY
}
