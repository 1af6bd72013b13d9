# Tests for envoy_demo.envoy.authz. Self-contained: every evaluation supplies the JWT
# configuration with `with data.envoy_demo.jwt as fixture`, so `opa test rego/envoy_demo`
# needs no data files. HS256 tokens are signed here with io.jwt.encode_sign; the RS256 ones
# were signed with test/extauthz/keys/rs256-private.pem (and forger-private.pem for the
# forged one) and expire in 2100 (2001 for the expired one), so no test depends on the clock.
package envoy_demo.envoy.authz_test

import data.envoy_demo.envoy.authz

fixture := {
	"issuer": "https://issuer.envoy-demo.example",
	"audience": "envoy-demo",
	"hs256_secret": "envoy-demo-hs256-secret-not-for-production",
	"rs256_public_key": `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuQ/TEIy5t54HYW7lb/1k
O1jY0JaLxcXmOFxbTc3veARVDvlbEzr5YuvzDdiES2FxStIJuD9rq48HFmcSYPsO
FFYmiq42meauV23FWfVIss897JDcT2eZmXqCV1X72cnjmmIDalliwzIT9QVohaSL
n476bB9S1y1+w/3LUUhchsBNlBZ1OjNnsDq5uL0ljpGpiCMo088auFzST9G+faCU
tofi8OBvMFwKugedjd/E1R2nd967B+yRCoaeqg1DBMauhAIGur+rhW+yUWxwQ9IZ
pB2Coq0TComOAx/4t5ICPLJXOOaxtPX34jQjixr18qb4uCabhwFLw7r6CrXybjxd
WQIDAQAB
-----END PUBLIC KEY-----
`,
}

bob_editor_rs256 := "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5lbnZveS1kZW1vLmV4YW1wbGUiLCJhdWQiOiJlbnZveS1kZW1vIiwic3ViIjoiYm9iIiwicm9sZSI6ImVkaXRvciIsImlhdCI6OTQ2Njg0ODAwLCJleHAiOjQxMDI0NDQ4MDB9.nPaSvTO7ue_MtRheO9E2_C24fMbaifQmun8XB6TnBO4SaWUkrkB1DFIdwH4Klzig-vfCC0J9Cj7OCinJfsI3oRgU3zWyJu3_kbeh8EcC_jodQZMa-cQqXz_XmHvzeOFInEoUJE0cLo8r86x5dJewDVIYhuQ2iq4JhzxqOh2CLpvfjhCiNSCE4p08vAxQoSw_v-Nb69NgxcEgZzlrQv5s4O9BSe5H2V_vk3yk8mJuDq04PLuBci7qRXt8kkgZt0iQFp5uODg9Ocu0Hvd648zSww62qZALjj4BCfT7kHv4fN-ecylq6tHmqawSFoDfcpP2HL-XXPp4J0Wt763qr4yMQg"

dave_viewer_expired_rs256 := "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5lbnZveS1kZW1vLmV4YW1wbGUiLCJhdWQiOiJlbnZveS1kZW1vIiwic3ViIjoiZGF2ZSIsInJvbGUiOiJ2aWV3ZXIiLCJpYXQiOjk0NjY4NDgwMCwiZXhwIjo5NzgzMDcyMDB9.aKVV4fxYOvqPhhMV8ec5BwMSCi-C9ZB0Qj7gtr3t09U4CiQRrrhG60sHUYiuAdLWrgt8WwcZEJ0I-uhENm1ae3W4ilnGyDV_X26m6PEO7ofzKSgoAtmvSqzBRLeLzaotk4NjFeSYAFVU-cpIUY7n9_1kxl_CZMAJYvsXyK3sYiRlZxLpnxYDLUWtyY4h9OqOBhWx2oxCOsfut5o84xWZntWRg0MksGnmKD-BRPJcqLSnLYFZATBjsOtjqd6WWXPwZmNddDqIhIQzaxNa0btY3AhODnzFGxRn6c7hbc0g24vDmIfQIDjtpYFvN8G9EBnrS3LT0KbGqZgxydEp-Uf5XA"

eve_admin_forged_rs256 := "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5lbnZveS1kZW1vLmV4YW1wbGUiLCJhdWQiOiJlbnZveS1kZW1vIiwic3ViIjoiZXZlIiwicm9sZSI6ImFkbWluIiwiaWF0Ijo5NDY2ODQ4MDAsImV4cCI6NDEwMjQ0NDgwMH0.ku8r-xGZEg5q2qSV6V9igbTlg7jNActj04HaNeSf_O3CA-_GseZY6jt4jNYNVqxPtF94PHaI6hddid_uiONc9UZG08CE5Rlr7PrvRoKa_d3gH3YJrkathAi92WbxDytjRtoLMkq9ikf5ynb4VAuAqQGFNO4zbw7n3jMPQnAjazIqP_jDC0zmzPeXsdjogDxRXaysPieTJi4WbQfXn7oBrvELofrOuzDVGWkg19rCwrVF3SDuP6KAvTnqEO_wcIRhJqjEhZ3xfuf6Yvw3pqua6cbtKhP99aYg4F44M27rfFjY6P_U77iQKHNcZbS3keFeB6m5g3T-bEd_7benJOo4rw"

hs256(sub, role, exp) := io.jwt.encode_sign(
	{"typ": "JWT", "alg": "HS256"},
	{"iss": fixture.issuer, "aud": fixture.audience, "sub": sub, "role": role, "iat": 946684800, "exp": exp},
	{"kty": "oct", "k": base64url.encode_no_pad(fixture.hs256_secret)},
)

future := 4102444800

request(method, path, headers) := {
	"attributes": {"request": {"http": {"method": method, "path": path, "headers": headers}}},
	"parsed_path": split(trim_left(split(path, "?")[0], "/"), "/"),
	"parsed_query": {},
	"parsed_body": null,
	"truncated_body": false,
	"version": {"ext_authz": "v3", "encoding": "protojson"},
}

with_body(req, body) := object.union(req, {"parsed_body": body})

bearer(token) := {"authorization": sprintf("Bearer %s", [token])}

decide(inp) := d if {
	d := authz.allow with input as inp with data.envoy_demo.jwt as fixture
}

test_viewer_reads_products if {
	d := decide(request("GET", "/api/v1/products", bearer(hs256("carol", "viewer", future))))
	d.allowed == true
	d.headers == {"x-current-user": "carol", "x-auth-roles": ["viewer", "authenticated"]}
	d.request_headers_to_remove == ["authorization"]
	d.response_headers_to_add == {"x-envoy-demo-decision": "allow"}
	d.query_parameters_to_set == {"authz_sub": "carol"}
	d.dynamic_metadata.token_alg == "HS256"
	d.dynamic_metadata.path_depth == 3
}

test_boolean_entrypoint_agrees if {
	authz.allowed with input as request("GET", "/api/v1/products/7", bearer(bob_editor_rs256)) with data.envoy_demo.jwt as fixture
	not authz.allowed with input as request("GET", "/api/v1/products", {}) with data.envoy_demo.jwt as fixture
}

test_rs256_editor_creates_product_within_limit if {
	d := decide(with_body(request("POST", "/api/v1/products", bearer(bob_editor_rs256)), {"name": "lamp", "price": 25}))
	d.allowed == true
	d.dynamic_metadata == {"sub": "bob", "role": "editor", "token_alg": "RS256", "path_depth": 3}
}

test_editor_price_over_limit_is_forbidden if {
	d := decide(with_body(request("POST", "/api/v1/products", bearer(bob_editor_rs256)), {"name": "yacht", "price": 5000}))
	d.allowed == false
	d.http_status == 403
	d.headers == {"content-type": "application/json"}
}

test_viewer_cannot_write if {
	d := decide(with_body(request("POST", "/api/v1/products", bearer(hs256("carol", "viewer", future))), {"name": "x", "price": 1}))
	d.allowed == false
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "POST is not permitted on this path for role viewer"}
}

test_only_admin_deletes if {
	decide(request("DELETE", "/api/v1/products/7", bearer(hs256("alice", "admin", future)))).allowed
	not decide(request("DELETE", "/api/v1/products/7", bearer(bob_editor_rs256))).allowed
}

test_missing_token_is_401_with_challenge if {
	d := decide(request("GET", "/api/v1/products", {}))
	d.allowed == false
	d.http_status == 401
	d.headers["www-authenticate"] == `Bearer realm="envoy-demo"`
	d.dynamic_metadata == {"reason": "authentication required", "status": 401, "path": "/api/v1/products"}
}

test_expired_token_is_invalid if {
	d := decide(request("GET", "/api/v1/products", bearer(dave_viewer_expired_rs256)))
	d.http_status == 401
	json.unmarshal(d.body) == {"error": "invalid bearer token"}
}

test_expired_hs256_token_is_invalid if {
	d := decide(request("GET", "/api/v1/products", bearer(hs256("carol", "viewer", 978307200))))
	d.http_status == 401
}

test_forged_token_is_invalid if {
	d := decide(request("GET", "/admin/users", bearer(eve_admin_forged_rs256)))
	d.http_status == 401
}

test_garbage_token_is_invalid if {
	d := decide(request("GET", "/api/v1/products", bearer("not.a.jwt")))
	d.http_status == 401
}

test_public_read_needs_no_token if {
	d := decide(request("GET", "/public/index.html", {}))
	d.allowed == true
	d.headers == {"x-current-user": "anonymous", "x-auth-roles": ["anonymous", "unauthenticated"]}
	d.request_headers_to_remove == []
}

test_public_write_needs_a_token if {
	d := decide(request("POST", "/public/upload", {}))
	d.http_status == 401
}

test_debug_query_needs_admin if {
	inp := object.union(request("GET", "/api/v1/products?debug=1", bearer(bob_editor_rs256)), {"parsed_query": {"debug": ["1"]}})
	d := decide(inp)
	d.allowed == false
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "debug needs the admin role"}
	admin := object.union(inp, {"attributes": {"request": {"http": {"method": "GET", "path": "/api/v1/products?debug=1", "headers": bearer(hs256("alice", "admin", future))}}}})
	decide(admin).allowed == true
}

test_truncated_body_is_413 if {
	inp := object.union(request("POST", "/api/v1/products", bearer(hs256("alice", "admin", future))), {"truncated_body": true})
	d := decide(inp)
	d.http_status == 413
}

test_order_form if {
	ok := with_body(request("POST", "/api/v1/orders", bearer(hs256("carol", "viewer", future))), {"item": ["tea"], "quantity": ["3"]})
	decide(ok).allowed == true
	too_many := with_body(request("POST", "/api/v1/orders", bearer(hs256("carol", "viewer", future))), {"item": ["tea"], "quantity": ["300"]})
	decide(too_many).allowed == false
	two_items := with_body(request("POST", "/api/v1/orders", bearer(hs256("carol", "viewer", future))), {"item": ["tea", "cake"], "quantity": ["1"]})
	decide(two_items).allowed == false
}

test_every_decision_is_defined_even_without_attributes if {
	d := decide({"parsed_path": [""], "parsed_query": {}, "parsed_body": null, "truncated_body": false})
	d.allowed == false
	d.http_status == 401
}
