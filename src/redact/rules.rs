//! Built-in detectors for secrets agentrun was not told about.
//!
//! Written from the vendors' published token formats and from the header and URL syntax of the
//! HTTP RFCs; nothing here is copied from other scanners. Each rule is a regex that must *start*
//! at one of its literal anchors: the anchors are the prefilter (plain lines never reach a regex)
//! and the candidate start positions for the streaming matcher, which needs to know where a
//! partial match could begin. A named group `secret` (or `secret_*`) limits what is replaced, so
//! `Authorization: Bearer` stays readable while the credential goes.

/// One built-in rule.
pub(crate) struct RuleDef {
    pub id: &'static str,
    pub desc: &'static str,
    pub group: &'static str,
    /// Literal strings a match starts with, combined with each of `anchor_prefixes`.
    pub anchors: &'static [&'static str],
    pub anchor_prefixes: &'static [&'static str],
    pub pattern: &'static str,
    /// Extra test on the replaced bytes (e.g. "looks random"), for short generic prefixes.
    pub check: Option<fn(&[u8]) -> bool>,
    /// A live partial match longer than this is replaced without waiting for its end.
    pub max_len: usize,
}

/// Rule groups: an id in `rules` may name a group or a single rule.
pub(crate) const GROUPS: &[(&str, &str)] = &[
    ("default", "every built-in rule below"),
    (
        "headers",
        "Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key and kin",
    ),
    (
        "urls",
        "credentials in URLs: user:pass@, token=, api_key=, signatures",
    ),
    (
        "keys",
        "private key blocks, JWTs, password=/token= assignments, secret JSON fields",
    ),
    (
        "tokens",
        "well-known token formats: AWS, GitHub, GitLab, npm, OpenAI, Anthropic, Slack, Stripe, Google, Vault, OpenBao",
    ),
];

/// Header value after `name: ` (or `name': '` in a dict repr, or `name=`): the scheme word stays,
/// the credential goes. Stops at a line end, a quote, or the backslash of a literal `\r\n`.
macro_rules! header_value {
    () => {
        concat!(
            r#"["']?[ \t]*[:=][ \t]*(?:["'](?:(?:"#,
            "bearer|basic|digest|token|negotiate|ntlm|hoba|mutual|vapid|scram-sha-1|scram-sha-256|aws4-hmac-sha256|apikey|api-key|key|otp|dpop|gnap|privatetoken|sso-key",
            r#")[ \t]+)?(?P<secret_q>[^"'\r\n\\]+)|(?:(?:"#,
            "bearer|basic|digest|token|negotiate|ntlm|hoba|mutual|vapid|scram-sha-1|scram-sha-256|aws4-hmac-sha256|apikey|api-key|key|otp|dpop|gnap|privatetoken|sso-key",
            r#")[ \t]+)?(?P<secret>[^\s"'\\][^\r\n"'\\]*))"#
        )
    };
}

const QUERY_NAMES: &[&str] = &[
    "token=",
    "key=",
    "secret=",
    "sig=",
    "signature=",
    "password=",
    "passwd=",
    "pwd=",
    "credential=",
    "apikey=",
    "auth=",
];

const JSON_ANCHORS: &[&str] = &[
    "password\"",
    "passwd\"",
    "secret\"",
    "token\"",
    "access_token\"",
    "refresh_token\"",
    "id_token\"",
    "auth_token\"",
    "client_secret\"",
    "api_key\"",
    "apikey\"",
    "private_key\"",
    "secret_access_key\"",
    "secretaccesskey\"",
    "session_token\"",
    "sessiontoken\"",
    "secretstring\"",
    "password'",
    "passwd'",
    "secret'",
    "token'",
    "access_token'",
    "refresh_token'",
    "id_token'",
    "auth_token'",
    "client_secret'",
    "api_key'",
    "apikey'",
    "private_key'",
    "secret_access_key'",
    "secretaccesskey'",
    "session_token'",
    "sessiontoken'",
    "secretstring'",
];

/// Random tokens mix cases and digits; identifiers such as `s.handleRequest` rarely do all three.
fn looks_random(s: &[u8]) -> bool {
    s.iter().any(u8::is_ascii_digit)
        && s.iter().any(u8::is_ascii_uppercase)
        && s.iter().any(u8::is_ascii_lowercase)
}

pub(crate) const RULES: &[RuleDef] = &[
    RuleDef {
        id: "auth-header",
        desc: "Authorization / Proxy-Authorization header values (the scheme word stays)",
        group: "headers",
        anchors: &["authorization"],
        anchor_prefixes: &[""],
        pattern: concat!("(?i)authorization", header_value!()),
        check: None,
        max_len: 16 * 1024,
    },
    RuleDef {
        id: "cookie-header",
        desc: "Cookie and Set-Cookie header values",
        group: "headers",
        anchors: &["cookie"],
        anchor_prefixes: &[""],
        pattern: concat!(
            "(?i)cookie",
            r#"["']?[ \t]*:[ \t]*(?:["'](?P<secret_q>[^"'\r\n\\]+)|(?P<secret>[^\s"'\\][^\r\n"'\\]*))"#
        ),
        check: None,
        max_len: 16 * 1024,
    },
    RuleDef {
        id: "api-key-header",
        desc: "X-Api-Key, X-Auth-Token, X-Vault-Token, Private-Token and similar headers",
        group: "headers",
        anchors: &[
            "api-key",
            "x-auth-token",
            "x-auth-key",
            "x-access-token",
            "x-amz-security-token",
            "x-vault-token",
            "private-token",
            "x-gitlab-token",
            "ocp-apim-subscription-key",
            "x-functions-key",
        ],
        anchor_prefixes: &[""],
        pattern: concat!(
            "(?i)(?:api-key|x-auth-token|x-auth-key|x-access-token|x-amz-security-token|x-vault-token|private-token|x-gitlab-token|ocp-apim-subscription-key|x-functions-key)",
            header_value!()
        ),
        check: None,
        max_len: 16 * 1024,
    },
    RuleDef {
        id: "url-userinfo",
        desc: "the password in scheme://user:password@host",
        group: "urls",
        anchors: &["://"],
        anchor_prefixes: &[""],
        pattern: r#"://[^\s:@/?#\[\]"'<>]*:(?P<secret>[^\s@/?#"'<>\\]+)@"#,
        check: None,
        max_len: 4096,
    },
    RuleDef {
        id: "url-query-secret",
        desc: "URL/query parameters token=, api_key=, secret=, sig=, X-Amz-Signature= and kin",
        group: "urls",
        anchors: QUERY_NAMES,
        anchor_prefixes: &["?", "&", ";", "_", "-", "."],
        pattern: r#"(?i)[?&;_.\-](?:token|key|secret|sig|signature|password|passwd|pwd|credential|apikey|auth)=(?P<secret>[^&\s#"'<>\\]+)"#,
        check: None,
        max_len: 8192,
    },
    RuleDef {
        id: "secret-assignment",
        desc: "password=, token=, secret=, api_key= assignments (env dumps, command lines)",
        group: "keys",
        anchors: &["token", "password", "passwd", "secret", "api_key", "apikey"],
        anchor_prefixes: &[""],
        pattern: r#"(?i)(?:token|password|passwd|secret|api_key|apikey)[ \t]*=[ \t]*(?:"(?P<secret_dq>[^"\r\n]+)"|'(?P<secret_sq>[^'\r\n]+)'|(?P<secret>[^\s"'&,;\\]+))"#,
        check: None,
        max_len: 8192,
    },
    RuleDef {
        id: "secret-field",
        desc: r#"JSON / dict fields such as "password": "...", 'SecretString': '...'"#,
        group: "keys",
        anchors: JSON_ANCHORS,
        anchor_prefixes: &["\"", "'"],
        pattern: r#"(?i)["'](?:password|passwd|secret|token|access_token|refresh_token|id_token|auth_token|client_secret|api_key|apikey|private_key|secret_access_key|secretaccesskey|session_token|sessiontoken|secretstring)["'][ \t]*:[ \t]*(?:"(?P<secret_dq>(?:[^"\\\r\n]|\\.)*)"|'(?P<secret_sq>(?:[^'\\\r\n]|\\.)*)')"#,
        check: None,
        max_len: 32 * 1024,
    },
    RuleDef {
        id: "private-key",
        desc: "the body of -----BEGIN ... PRIVATE KEY----- blocks (also with literal \\n; without an END line, to the end of output)",
        group: "keys",
        anchors: &["-----BEGIN"],
        anchor_prefixes: &[""],
        pattern: r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?P<secret>[A-Za-z0-9+/=\s\\:,.\-]*?)(?:-----END|[^A-Za-z0-9+/=\s\\:,.\-]|\z)",
        check: None,
        max_len: 64 * 1024,
    },
    RuleDef {
        id: "jwt",
        desc: "JSON Web Tokens (eyJ....eyJ....sig)",
        group: "keys",
        anchors: &["eyJ"],
        anchor_prefixes: &[""],
        pattern: r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
        check: None,
        max_len: 16 * 1024,
    },
    RuleDef {
        id: "aws-access-key-id",
        desc: "AWS access key ids (AKIA..., ASIA...)",
        group: "tokens",
        anchors: &["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
        anchor_prefixes: &[""],
        pattern: r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
        check: None,
        max_len: 64,
    },
    RuleDef {
        id: "aws-secret-access-key",
        desc: "AWS secret access keys after aws_secret_access_key= / SecretAccessKey:",
        group: "tokens",
        anchors: &["aws_secret_access_key", "secretaccesskey", "aws_secret_key"],
        anchor_prefixes: &[""],
        pattern: r#"(?i)(?:aws_secret_access_key|secretaccesskey|aws_secret_key)["']?[ \t]*[:=][ \t]*["']?(?P<secret>[A-Za-z0-9/+=]{40})"#,
        check: None,
        max_len: 256,
    },
    RuleDef {
        id: "github-token",
        desc: "GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
        group: "tokens",
        anchors: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        anchor_prefixes: &[""],
        pattern: r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}",
        check: None,
        max_len: 512,
    },
    RuleDef {
        id: "gitlab-token",
        desc: "GitLab personal/project/deploy tokens (glpat-, gldt-, glptt-)",
        group: "tokens",
        anchors: &["glpat-", "gldt-", "glptt-"],
        anchor_prefixes: &[""],
        pattern: r"gl(?:pat|dt|ptt)-[A-Za-z0-9_\-]{20,}",
        check: None,
        max_len: 512,
    },
    RuleDef {
        id: "npm-token",
        desc: "npm access tokens (npm_...)",
        group: "tokens",
        anchors: &["npm_"],
        anchor_prefixes: &[""],
        pattern: r"npm_[A-Za-z0-9]{36}",
        check: None,
        max_len: 128,
    },
    RuleDef {
        id: "openai-key",
        desc: "OpenAI API keys (sk-..., sk-proj-..., sk-svcacct-..., sk-admin-...)",
        group: "tokens",
        anchors: &["sk-"],
        anchor_prefixes: &[""],
        pattern: r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}|[A-Za-z0-9]{32,})",
        check: None,
        max_len: 1024,
    },
    RuleDef {
        id: "anthropic-key",
        desc: "Anthropic API keys (sk-ant-api03-..., sk-ant-admin01-...)",
        group: "tokens",
        anchors: &["sk-ant-"],
        anchor_prefixes: &[""],
        pattern: r"sk-ant-[a-z]{2,8}[0-9]{2}-[A-Za-z0-9_\-]{20,}",
        check: None,
        max_len: 1024,
    },
    RuleDef {
        id: "slack-token",
        desc: "Slack tokens (xoxb-, xoxp-, xoxa-, xoxe-, xapp-)",
        group: "tokens",
        anchors: &["xox", "xapp-"],
        anchor_prefixes: &[""],
        pattern: r"xox[a-z]-[A-Za-z0-9\-]{10,}|xapp-[0-9]-[A-Za-z0-9\-]{10,}",
        check: None,
        max_len: 512,
    },
    RuleDef {
        id: "slack-webhook",
        desc: "the secret path of Slack incoming-webhook URLs",
        group: "tokens",
        anchors: &["hooks.slack.com/"],
        anchor_prefixes: &[""],
        pattern: r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9/_\-]{20,})",
        check: None,
        max_len: 512,
    },
    RuleDef {
        id: "stripe-key",
        desc: "Stripe secret and restricted keys, webhook secrets (sk_live_, rk_test_, whsec_)",
        group: "tokens",
        anchors: &["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"],
        anchor_prefixes: &[""],
        pattern: r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9+/=]{20,}",
        check: None,
        max_len: 512,
    },
    RuleDef {
        id: "google-api-key",
        desc: "Google API keys (AIza...)",
        group: "tokens",
        anchors: &["AIza"],
        anchor_prefixes: &[""],
        pattern: r"AIza[0-9A-Za-z_\-]{35}",
        check: None,
        max_len: 64,
    },
    RuleDef {
        id: "google-oauth",
        desc: "Google OAuth access tokens (ya29.) and client secrets (GOCSPX-)",
        group: "tokens",
        anchors: &["ya29.", "GOCSPX-"],
        anchor_prefixes: &[""],
        pattern: r"ya29\.[0-9A-Za-z_\-]{20,}|GOCSPX-[0-9A-Za-z_\-]{20,}",
        check: None,
        max_len: 4096,
    },
    RuleDef {
        id: "vault-token",
        desc: "HashiCorp Vault tokens (hvs., hvb., hvr.)",
        group: "tokens",
        anchors: &["hvs.", "hvb.", "hvr."],
        anchor_prefixes: &[""],
        pattern: r"hv[sbr]\.[A-Za-z0-9_\-]{20,}",
        check: None,
        max_len: 1024,
    },
    RuleDef {
        id: "openbao-token",
        desc: "OpenBao (and legacy Vault) service tokens (s. + 24 or more random characters)",
        group: "tokens",
        anchors: &["s."],
        anchor_prefixes: &[""],
        pattern: r"\bs\.[A-Za-z0-9]{24,}\b",
        check: Some(looks_random),
        max_len: 1024,
    },
];

/// Expand the `rules` list of a profile to indices into [`RULES`]; `Err(i)` names the first
/// unknown entry.
pub(crate) fn resolve(ids: &[String]) -> Result<Vec<usize>, usize> {
    let mut out: Vec<usize> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let picked: Vec<usize> = if id == "default" {
            (0..RULES.len()).collect()
        } else if GROUPS.iter().any(|(g, _)| g == id) {
            (0..RULES.len()).filter(|&r| RULES[r].group == id).collect()
        } else if let Some(r) = RULES.iter().position(|r| r.id == id) {
            vec![r]
        } else {
            return Err(i);
        };
        for r in picked {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// `(id, description)` of every group and rule, groups first.
pub(crate) fn catalogue() -> &'static [(&'static str, &'static str)] {
    static CAT: std::sync::OnceLock<Vec<(&'static str, &'static str)>> = std::sync::OnceLock::new();
    CAT.get_or_init(|| {
        GROUPS
            .iter()
            .copied()
            .chain(RULES.iter().map(|r| (r.id, r.desc)))
            .collect()
    })
}
