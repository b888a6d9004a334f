"""Security: listeners (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), TLS, SASL (PLAIN,
SCRAM-SHA-256/512) and Kafka's ACL authorizer. See docs/security.md.

  listeners   parsing `listeners` / `advertised.listeners` / `listener.security.protocol.map`
  tls         the server SSLContext from PEM files, SIGHUP reload, file regions through TLS
  scram       SCRAM and PLAIN mechanisms (server side)
  store       credentials.json and acls.json in the data dir, written atomically
  session     one connection's principal and SASL state (the pre-authentication gate)
  authorizer  ACL bindings and decisions, the audit log of denials
  state       the broker-wide SecurityState, built at start-up
"""
