SELECT p.proname,
       pg_catalog.pg_get_function_identity_arguments(p.oid) AS identity_args,
       n.nspname AS schema
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('pg_catalog', 'information_schema')
  AND EXISTS (
        SELECT 1
        FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) AS a(t)
        WHERE a.t IN ('pg_catalog.text'::pg_catalog.regtype,
                      'pg_catalog.name'::pg_catalog.regtype,
                      'pg_catalog.regclass'::pg_catalog.regtype,
                      'pg_catalog.refcursor'::pg_catalog.regtype,
                      'pg_catalog.cstring'::pg_catalog.regtype,
                      'pg_catalog."any"'::pg_catalog.regtype,
                      'pg_catalog.anyelement'::pg_catalog.regtype,
                      'pg_catalog.oid'::pg_catalog.regtype))
ORDER BY p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid) COLLATE "C", n.nspname;
