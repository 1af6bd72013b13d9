# METADATA
# title: Envoy ext_authz demo
# description: |
#   An Envoy / Istio ext_authz policy in the style of OPA's Envoy tutorial, served by
#   Pavilion's ext_authz server exactly as opa-envoy-plugin would serve it (the input is
#   opa-envoy-plugin's document: input.attributes.request.http, input.parsed_path,
#   input.parsed_query, input.parsed_body, input.truncated_body).
#
#   - Bearer JWTs checked with io.jwt.decode_verify: HS256 (shared secret) or RS256
#     (public key), issuer and audience pinned, expiry enforced.
#   - Method/path RBAC by the token's role (viewer < editor < admin), a product body check
#     on writes (JSON) and an order form check (application/x-www-form-urlencoded).
#   - Allowed requests get identity headers upstream (`headers`, one of them multi-valued),
#     a response header for the client, the token stripped (`request_headers_to_remove`),
#     query parameters removed and set, and dynamic metadata for Envoy's access log.
#   - Denied requests get a JSON body, a status (401 with WWW-Authenticate, 403, 413 for a
#     truncated body) and dynamic metadata with the reason and the request path. The body
#     never embeds request text: json.marshal escapes <, > and & as \u003c... in OPA but not
#     in opa-wasm, so such a body would differ from opa-envoy-plugin's byte for byte.
#
#   Configuration: data.envoy_demo.jwt (bundles/envoy_demo/data/jwt.json).
#   Entry points: envoy_demo/envoy/authz/allow (the object decision, Pavilion's default
#   decision path for the tenant) and envoy_demo/envoy/authz/allowed (the same verdict as
#   a boolean).
package envoy_demo.envoy.authz

import input.attributes.request.http as http_request

jwt_config := data.envoy_demo.jwt

max_price := {"editor": 1000, "admin": 100000}

product_readers := {"viewer", "editor", "admin"}

product_writers := {"editor", "admin"}

# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

default allowed := false

allowed if {
	permitted
	not blocked
}

allow := {
	"allowed": true,
	"headers": {
		"x-current-user": subject,
		"x-auth-roles": [role, authenticated_marker],
	},
	"response_headers_to_add": {"x-envoy-demo-decision": "allow"},
	"request_headers_to_remove": removed_request_headers,
	"query_parameters_to_remove": ["debug"],
	"query_parameters_to_set": {"authz_sub": subject},
	"dynamic_metadata": {
		"sub": subject,
		"role": role,
		"token_alg": token_alg,
		"path_depth": count(input.parsed_path),
	},
} if allowed

allow := {
	"allowed": false,
	"http_status": denial.status,
	"body": json.marshal({"error": denial.reason}),
	"headers": denial_headers,
	"dynamic_metadata": {"reason": denial.reason, "status": denial.status, "path": request_path},
} if not allowed

# ---------------------------------------------------------------------------
# Bearer token
# ---------------------------------------------------------------------------

bearer := t if {
	header := http_request.headers.authorization
	startswith(header, "Bearer ")
	t := substring(header, count("Bearer "), -1)
}

hs256_claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(bearer, {
		"secret": jwt_config.hs256_secret,
		"alg": "HS256",
		"iss": jwt_config.issuer,
		"aud": jwt_config.audience,
	})
	valid
}

rs256_claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(bearer, {
		"cert": jwt_config.rs256_public_key,
		"alg": "RS256",
		"iss": jwt_config.issuer,
		"aud": jwt_config.audience,
	})
	valid
}

claims := hs256_claims

claims := rs256_claims if not hs256_claims

token_alg := "HS256" if hs256_claims

token_alg := "RS256" if rs256_claims

token_alg := "none" if not claims

default token_state := "missing"

token_state := "valid" if claims

token_state := "invalid" if {
	http_request.headers.authorization
	not claims
}

subject := claims.sub if claims

subject := "anonymous" if not claims

role := claims.role if claims

role := "anonymous" if not claims

authenticated_marker := "authenticated" if claims

authenticated_marker := "unauthenticated" if not claims

removed_request_headers := ["authorization"] if claims

removed_request_headers := [] if not claims

# ---------------------------------------------------------------------------
# RBAC: method and path
# ---------------------------------------------------------------------------

default method := ""

method := http_request.method

default request_path := ""

request_path := http_request.path

path := input.parsed_path

products_path := ["api", "v1", "products"]

public_read if {
	path[0] == "public"
	method in {"GET", "HEAD"}
}

public_read if {
	path == ["health"]
	method == "GET"
}

permitted if public_read

permitted if {
	token_state == "valid"
	rbac
}

rbac if {
	array.slice(path, 0, 3) == products_path
	method == "GET"
	role in product_readers
}

rbac if {
	path == products_path
	method == "POST"
	role in product_writers
	valid_product_body
}

rbac if {
	count(path) == 4
	array.slice(path, 0, 3) == products_path
	method in {"PUT", "PATCH"}
	role in product_writers
	valid_product_body
}

rbac if {
	count(path) == 4
	array.slice(path, 0, 3) == products_path
	method == "DELETE"
	role == "admin"
}

rbac if {
	path == ["api", "v1", "orders"]
	method == "POST"
	role in product_readers
	valid_order_form
}

rbac if {
	path == ["api", "v1", "me"]
	method == "GET"
}

rbac if {
	path[0] == "admin"
	role == "admin"
}

valid_product_body if {
	body := input.parsed_body
	is_object(body)
	is_string(body.name)
	is_number(body.price)
	body.price >= 0
	body.price <= max_price[role]
}

# Form bodies arrive as lists of values per key.
valid_order_form if {
	[item] := input.parsed_body.item
	item != ""
	[quantity] := input.parsed_body.quantity
	regex.match(`^[1-9][0-9]?$`, quantity)
}

# Requests allowed by RBAC can still be blocked.
blocked if input.truncated_body == true

blocked if {
	input.parsed_query.debug
	role != "admin"
}

# ---------------------------------------------------------------------------
# Denials
# ---------------------------------------------------------------------------

denial := {"status": 413, "reason": "request body too large"} if {
	input.truncated_body == true
} else := {"status": 401, "reason": "invalid bearer token"} if {
	token_state == "invalid"
} else := {"status": 401, "reason": "authentication required"} if {
	token_state == "missing"
	not public_read
} else := {"status": 403, "reason": "debug needs the admin role"} if {
	input.parsed_query.debug
	role != "admin"
} else := {"status": 403, "reason": concat(" ", [method, "is not permitted on this path for role", role])}

denial_headers := {
	"content-type": "application/json",
	"www-authenticate": `Bearer realm="envoy-demo"`,
} if denial.status == 401

denial_headers := {"content-type": "application/json"} if denial.status != 401
