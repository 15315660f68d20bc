//! Envoy's configuration for each setup of the comparison.

use super::Setup;

/// Where the ext_authz server listens.
pub(super) enum Address {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

/// Envoy's configuration for one setup: the listener routes every request to `app`, through
/// ext_authz (claw-authz or the floor server at `authz`) or `jwt_authn`, or nothing.
pub(super) fn envoy_config(
    setup: Setup,
    app: std::net::SocketAddr,
    authz: Option<&Address>,
    jwks: &str,
) -> String {
    // Items of `http_filters`, indented to sit before the router below.
    let filter = match setup {
        Setup::Alone => String::new(),
        Setup::ClawAuthz | Setup::ClawAuthzUnix | Setup::Floor | Setup::FloorAnswering => "
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      grpc_service: { envoy_grpc: { cluster_name: authz }, timeout: 1s }
                      failure_mode_allow: false
                      status_on_error: { code: ServiceUnavailable }
                      with_request_body: { max_request_bytes: 1048576, allow_partial_message: false, pack_as_bytes: true }
                      encode_raw_headers: true"
            .to_owned(),
        Setup::JwtAuthn => format!(
            "
                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        bench:
                          issuer: claw-bench
                          audiences: [claw-bench]
                          local_jwks: {{ inline_string: '{jwks}' }}
                      rules:
                        - match: {{ prefix: / }}
                          requires: {{ provider_name: bench }}"
        ),
    };
    let authz_cluster = authz.map_or(String::new(), |a| {
        let address = match a {
            Address::Tcp(a) => format!(
                "socket_address: {{ address: 127.0.0.1, port_value: {} }}",
                a.port()
            ),
            Address::Unix(path) => format!("pipe: {{ path: {} }}", path.display()),
        };
        format!(
            "
    - name: authz
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: authz
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ {address} }} }} }}] }}]"
        )
    });
    format!(
        "admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
    - name: ingress
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                normalize_path: false
                route_config:
                  virtual_hosts:
                    - name: app
                      domains: [\"*\"]
                      routes: [{{ match: {{ prefix: / }}, route: {{ cluster: app }} }}]
                http_filters:{filter}
                  - name: envoy.filters.http.router
                    typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
    - name: app
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: app
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]{authz_cluster}
",
        app.port()
    )
}
