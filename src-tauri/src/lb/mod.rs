//! Load-balancer drivers (HAProxy runtime API, Caddy admin API). Arrive with the units issue.
