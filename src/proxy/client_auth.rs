//! The client's password exchange with pgcast (SCRAM-SHA-256, RFC 5802/7677; MD5; trust),
//! against a configured password or a stored hash, and what a successful one leaves pgcast to
//! log in to the backends as that user ([`BackendSecret`]).

use bytes::BytesMut;

use super::auth::{self, ClientKey, ScramServer, ScramVerifier};
use super::backend_auth::BackendSecret;
use super::scram_keys::ScramKeys;
use super::startup::read_message;
use super::tls::{self, ClientStream};
use super::{message, ProxyContext, ProxyError};
use crate::config::{ClientAuthMethod, PasswordHash, UserConfig};

/// Largest authentication message a client may send.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// The client connection during authentication.
pub(super) struct ClientIo<'a> {
    pub stream: &'a mut ClientStream,
    pub buf: &'a mut BytesMut,
}

impl ClientIo<'_> {
    async fn request(&mut self, code: i32, data: &[u8]) -> Result<(), ProxyError> {
        let mut out = BytesMut::new();
        message::write_auth_request(&mut out, code, data);
        tls::send(self.stream, &out).await?;
        Ok(())
    }

    /// The body of the client's next PasswordMessage / SASL response (`None`: another
    /// message came).
    async fn response(&mut self) -> Result<Option<message::Message>, ProxyError> {
        let m = read_message(self.stream, self.buf, MAX_AUTH_MESSAGE).await?;
        Ok((m.tag == b'p').then_some(m))
    }
}

/// Runs the exchange `method` asks for. `Some(secret)` when the client proved who it is:
/// what pgcast logs in to the backends with for this session. Unknown users go through the
/// same exchange against a random verifier, so the answer does not reveal which users exist.
pub(super) async fn authenticate(
    io: &mut ClientIo<'_>,
    ctx: &ProxyContext,
    method: ClientAuthMethod,
    user_name: &str,
    user: Option<&UserConfig>,
) -> Result<Option<BackendSecret>, ProxyError> {
    let Some(user) = user else {
        match method {
            ClientAuthMethod::Trust => {}
            ClientAuthMethod::Md5 => {
                md5_exchange(io, |_, _| false).await?;
            }
            ClientAuthMethod::ScramSha256 => {
                scram_exchange(io, ScramVerifier::mock(user_name)).await?;
            }
        }
        return Ok(None);
    };
    let method = effective_method(method, user);
    let proved = match method {
        ClientAuthMethod::Trust => Some(None),
        ClientAuthMethod::Md5 => md5_exchange(io, |salt, r| check_md5(user, salt, r))
            .await?
            .then_some(None),
        ClientAuthMethod::ScramSha256 => scram_exchange(io, scram_verifier(ctx, user).await)
            .await?
            .map(Some),
    };
    let checked = method != ClientAuthMethod::Trust;
    Ok(proved.map(|key| backend_secret(user, key.as_ref(), checked)))
}

/// PostgreSQL checks a role whose stored password is a SCRAM verifier with SCRAM even where
/// `md5` is asked for (`auth.c`, CheckPWChallengeAuth); so does pgcast.
fn effective_method(method: ClientAuthMethod, user: &UserConfig) -> ClientAuthMethod {
    let scram_only =
        user.password.is_none() && matches!(user.password_hash, Some(PasswordHash::Scram(_)));
    if method == ClientAuthMethod::Md5 && scram_only {
        ClientAuthMethod::ScramSha256
    } else {
        method
    }
}

fn check_md5(user: &UserConfig, salt: [u8; 4], response: &[u8]) -> bool {
    match (&user.password, &user.password_hash) {
        (Some(pw), _) => auth::verify_md5(&user.name, pw, salt, response),
        (None, Some(PasswordHash::Md5(stored))) => auth::verify_md5_hash(stored, salt, response),
        _ => false,
    }
}

/// The verifier the client's SCRAM proof is checked against.
async fn scram_verifier(ctx: &ProxyContext, user: &UserConfig) -> ScramVerifier {
    match (&user.password, &user.password_hash) {
        (Some(pw), _) => ctx.scram.get(&user.name, pw).await,
        (None, Some(PasswordHash::Scram(v))) => v.clone(),
        // An MD5 hash cannot check a SCRAM proof (PostgreSQL fails such a login at the
        // proof too), nor can a trust user without a password.
        _ => ScramVerifier::mock(&user.name),
    }
}

/// What pgcast logs in to the backends with as `user`: `backend_password`, else the password,
/// else the MD5 hash (only after the client proved the password: `checked`), else the SCRAM
/// ClientKey the client just proved (`client_key`). A trust login must not open a role whose
/// stored hash pgcast happens to hold (an `auth_query` user may be any role of the cluster).
pub(super) fn backend_secret(
    user: &UserConfig,
    client_key: Option<&ClientKey>,
    checked: bool,
) -> BackendSecret {
    if let Some(pw) = user.backend_password() {
        return BackendSecret::Password(pw.to_string());
    }
    match (&user.password_hash, client_key) {
        (Some(PasswordHash::Md5(stored)), _) if checked => BackendSecret::Md5Hash(stored.clone()),
        (Some(PasswordHash::Scram(v)), Some(key)) => {
            BackendSecret::ScramKeys(ScramKeys::new(key.clone(), v.clone()))
        }
        // A trust login proved nothing: only a backend that trusts pgcast lets it in.
        _ => BackendSecret::None,
    }
}

/// AuthenticationMD5Password with a random salt; whether `check` accepts the answer.
async fn md5_exchange(
    io: &mut ClientIo<'_>,
    check: impl Fn([u8; 4], &[u8]) -> bool,
) -> Result<bool, ProxyError> {
    let salt: [u8; 4] = rand::random();
    io.request(5, &salt).await?;
    let Some(m) = io.response().await? else {
        return Ok(false);
    };
    let response = m.body().strip_suffix(&[0]).unwrap_or(m.body());
    Ok(check(salt, response))
}

/// The SASL exchange (PostgreSQL docs, "SASL Authentication"); the proven ClientKey when the
/// proof verified.
async fn scram_exchange(
    io: &mut ClientIo<'_>,
    verifier: ScramVerifier,
) -> Result<Option<ClientKey>, ProxyError> {
    // On TLS, SCRAM-SHA-256-PLUS is offered too, so `channel_binding=require` works.
    let binding = io.stream.channel_binding().map(<[u8]>::to_vec);
    let mut server = ScramServer::with_random_nonce(verifier).with_channel_binding(binding);
    io.request(10, server.mechanisms()).await?;
    let Some(m) = io.response().await? else {
        return Ok(None);
    };
    let Ok((mechanism, data)) = message::decode_sasl_initial(m.body()) else {
        return Ok(None);
    };
    let Ok(first) = server.client_first_for(mechanism, data) else {
        return Ok(None);
    };
    io.request(11, &first).await?;
    let Some(m) = io.response().await? else {
        return Ok(None);
    };
    let Ok(fin) = server.client_final(m.body()) else {
        return Ok(None);
    };
    io.request(12, &fin).await?;
    Ok(server.client_key().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn users() -> Vec<std::sync::Arc<UserConfig>> {
        let scram = ScramVerifier::from_password("pw", b"salt", 4096).to_stored_string();
        let md5 = postgres_protocol::password::md5(b"pw", "hashed_md5");
        let text = format!(
            "[admin]\nsocket = \"/tmp/x.sock\"\n[[listeners]]\nname = \"a\"\n\
             address = \"127.0.0.1:1\"\nrole = \"auto\"\n[[backends]]\nname = \"pg1\"\nhost = \"h\"\n\
             [[users]]\nname = \"plain\"\npassword = \"pw\"\n\
             [[users]]\nname = \"hashed_scram\"\npassword_hash = \"{scram}\"\n\
             [[users]]\nname = \"hashed_md5\"\nauth = \"md5\"\npassword_hash = \"{md5}\"\n\
             [[users]]\nname = \"both\"\npassword_hash = \"{scram}\"\nbackend_password = \"bp\"\n\
             [[users]]\nname = \"trusted\"\nauth = \"trust\"\n"
        );
        Config::parse(&text, std::path::Path::new("t.toml"))
            .expect("valid")
            .users
    }

    #[test]
    fn a_scram_verifier_is_checked_with_scram_even_where_md5_is_asked() {
        use ClientAuthMethod::*;
        let users = users();
        let method = |i: usize, m| effective_method(m, &users[i]);
        assert_eq!(method(0, Md5), Md5, "a password does both");
        assert_eq!(method(1, Md5), ScramSha256);
        assert_eq!(method(1, Trust), Trust);
        assert_eq!(method(2, Md5), Md5);
        assert_eq!(method(2, ScramSha256), ScramSha256, "fails at the proof");
    }

    #[test]
    fn md5_logins_against_a_password_or_the_stored_hash() {
        let users = users();
        let salt = [9, 8, 7, 6];
        let plain = auth::md5_client_response("plain", "pw", salt);
        assert!(check_md5(&users[0], salt, plain.as_bytes()));
        let hashed = auth::md5_client_response("hashed_md5", "pw", salt);
        assert!(check_md5(&users[2], salt, hashed.as_bytes()));
        let wrong = auth::md5_client_response("hashed_md5", "pW", salt);
        assert!(!check_md5(&users[2], salt, wrong.as_bytes()));
        assert!(
            !check_md5(&users[4], salt, b""),
            "no password: nothing passes"
        );
    }

    #[test]
    fn what_each_user_logs_in_to_the_backends_with() {
        let users = users();
        let key = ClientKey([7; 32]);
        let kind = |i: usize, key: Option<&ClientKey>| {
            format!("{:?}", backend_secret(&users[i], key, true))
        };
        assert_eq!(kind(0, None), "BackendSecret::Password(<hidden>)");
        assert_eq!(kind(1, Some(&key)), "BackendSecret::ScramKeys(<hidden>)");
        assert_eq!(kind(1, None), "BackendSecret::None", "trust proved no key");
        assert_eq!(kind(2, None), "BackendSecret::Md5Hash(<hidden>)");
        assert_eq!(kind(3, Some(&key)), "BackendSecret::Password(<hidden>)");
        assert_eq!(kind(4, None), "BackendSecret::None");
        assert_eq!(
            format!("{:?}", backend_secret(&users[2], None, false)),
            "BackendSecret::None",
            "a trust login does not get the stored MD5 hash"
        );
    }
}
