//! Account leases and the fleet registry on Redis (see `lease.lua` and `heartbeat.lua` for
//! the invariants the scripts keep).

use std::future::Future;
use std::time::Duration;

use redis::Value;
use sync_core::Commit;

use super::{BACKEND, Evaluated, Op, RedisStorage, Run, corrupt, strings};
use crate::lease::{Acquired, FencingToken, Lease, LeaseInfo};
use crate::{AccountId, Error, LeaseStorage, RegistryStorage, Result};

/// A ttl as the scripts take it: whole milliseconds (a ttl over u64::MAX ms saturates).
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// A number in a script's reply.
fn number(text: &str, reply: &Value) -> Result<u64> {
    text.parse()
        .map_err(|_| corrupt("lease script reply", reply))
}

/// The script's answer as strings, with `{'corrupt', key, detail}` turned into the error.
fn lease_reply(reply: &Value) -> Result<Vec<String>> {
    let parts = strings(reply).ok_or_else(|| corrupt("lease script reply", reply))?;
    if let [tag, key, detail] = parts.as_slice()
        && tag == "corrupt"
    {
        return Err(Error::Corrupt {
            backend: BACKEND,
            location: key.clone(),
            detail: detail.clone(),
        });
    }
    Ok(parts)
}

/// Reads `{'ok'}` or `{'fenced', current}` (renewals).
fn renew_outcome(lease: &Lease, reply: &Value) -> Result<()> {
    match lease_reply(reply)?.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        [tag, current] if tag == "fenced" => Err(Error::Fenced {
            account: lease.account,
            token: lease.token.0,
            current: number(current, reply)?,
        }),
        _ => Err(corrupt("lease script reply", reply)),
    }
}

/// Reads a holder's `owner, token, ms left`.
fn holder_info(owner: &str, token: &str, left: &str, reply: &Value) -> Result<LeaseInfo> {
    Ok(LeaseInfo {
        owner: owner.to_owned(),
        token: FencingToken(number(token, reply)?),
        expires_in: Duration::from_millis(number(left, reply)?),
    })
}

impl RedisStorage {
    /// The run of `lease.lua` on the account's lease and fence keys.
    fn lease_run(&self, account: AccountId, args: &[String]) -> Run {
        Run {
            route: self.route(account),
            command: Self::evalsha(
                &self.lease,
                &[self.lease_key(account), self.fence_key(account)],
                args,
            ),
        }
    }

    /// Runs one lease operation (`lease.lua`) on the account's lease and fence keys; a write
    /// (`Op::Write`: an acquisition, which bumps the fence) waits for the replicas when
    /// writes do.
    async fn lease_script(
        &self,
        kind: Op,
        account: AccountId,
        args: &[String],
    ) -> Result<Evaluated> {
        let run = self.lease_run(account, args);
        self.eval_one(&self.lease, kind, kind == Op::Write, &run)
            .await
    }

    fn renew_args(lease: &Lease) -> Vec<String> {
        vec![
            "renew".into(),
            lease.owner.to_string(),
            ttl_millis(lease.ttl).to_string(),
            lease.token.0.to_string(),
        ]
    }
}

impl LeaseStorage for RedisStorage {
    async fn acquire(&self, account: AccountId, owner: &str, ttl: Duration) -> Result<Acquired> {
        let args = [
            "acquire".to_owned(),
            owner.to_owned(),
            ttl_millis(ttl).to_string(),
        ];
        // A write that is not repeated once it may have run: a second run would give out
        // another token (safe, the first is merely fenced off, but the caller would hold a
        // lease it does not know the token of), so an unanswered send is `Ambiguous`.
        let Evaluated { reply, replicated } = self.lease_script(Op::Write, account, &args).await?;
        match lease_reply(&reply)?.as_slice() {
            // A held lease bumped the fence: it counts only once the replicas have the bump,
            // or a fail-over could hand the same token out again.
            [tag, token] if tag == "held" => {
                replicated?;
                Ok(Acquired::Held(Lease {
                    account,
                    owner: owner.into(),
                    token: FencingToken(number(token, &reply)?),
                    ttl,
                }))
            }
            [tag, owner, token, left] if tag == "busy" => {
                Ok(Acquired::Busy(holder_info(owner, token, left, &reply)?))
            }
            _ => Err(corrupt("lease script reply", &reply)),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<()> {
        // Safe to repeat (it only extends the current token's lease), so retried like a read.
        let evaluated = self
            .lease_script(Op::Read, lease.account, &Self::renew_args(lease))
            .await?;
        renew_outcome(lease, &evaluated.reply)
    }

    async fn renew_many(&self, leases: &[Lease]) -> Result<Vec<Result<()>>> {
        let runs: Vec<Run> = leases
            .iter()
            .map(|lease| self.lease_run(lease.account, &Self::renew_args(lease)))
            .collect();
        let results = self.eval_many(&self.lease, Op::Read, false, &runs).await?;
        Ok(leases
            .iter()
            .zip(results)
            .map(|(lease, result)| renew_outcome(lease, &result?.reply))
            .collect())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        // Safe to repeat: a second run finds the lease gone, or another token, and does nothing.
        let args = ["release".to_owned(), lease.token.0.to_string()];
        let reply = self
            .lease_script(Op::Read, lease.account, &args)
            .await?
            .reply;
        match lease_reply(&reply)?.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            _ => Err(corrupt("lease script reply", &reply)),
        }
    }

    async fn lease_holder(&self, account: AccountId) -> Result<Option<LeaseInfo>> {
        let reply = self
            .lease_script(Op::Read, account, &["holder".to_owned()])
            .await?
            .reply;
        match lease_reply(&reply)?.as_slice() {
            [free] if free == "free" => Ok(None),
            [tag, owner, token, left] if tag == "held" => {
                Ok(Some(holder_info(owner, token, left, &reply)?))
            }
            _ => Err(corrupt("lease script reply", &reply)),
        }
    }

    fn apply_fenced(
        &self,
        account: AccountId,
        token: FencingToken,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        // The commit script with the fence as a third key and the token last: one EVALSHA,
        // the token checked with the sequences. Retried like a plain commit.
        let run = self.commit_run(account, Some(token), commit);
        self.commit_one(account, Some(token), run)
    }
}

impl RedisStorage {
    /// `SADD` or `SREM` of account ids on the registry's set: safe to repeat.
    async fn registry_set(&self, command: &'static str, accounts: &[AccountId]) -> Result<()> {
        if accounts.is_empty() {
            return Ok(());
        }
        let key = self.registry_accounts_key();
        self.with_retries(
            Op::Read,
            command,
            self.registry_route(),
            |mut connection| {
                let mut cmd = redis::cmd(command);
                cmd.arg(&key).arg(accounts);
                async move { cmd.query_async::<()>(&mut connection).await }
            },
        )
        .await
    }
}

impl RegistryStorage for RedisStorage {
    async fn register(&self, accounts: &[AccountId]) -> Result<()> {
        self.registry_set("SADD", accounts).await
    }

    async fn unregister(&self, accounts: &[AccountId]) -> Result<()> {
        self.registry_set("SREM", accounts).await
    }

    async fn registered(&self) -> Result<Vec<AccountId>> {
        let key = self.registry_accounts_key();
        let reply: Value = self
            .with_retries(
                Op::Read,
                "SMEMBERS",
                self.registry_route(),
                |mut connection| {
                    let key = key.clone();
                    async move {
                        redis::cmd("SMEMBERS")
                            .arg(key)
                            .query_async(&mut connection)
                            .await
                    }
                },
            )
            .await?;
        let (Value::Array(items) | Value::Set(items)) = &reply else {
            return Err(corrupt(key, &reply));
        };
        let mut accounts = items
            .iter()
            .map(|item| {
                super::parse_number(item, || format!("{key} (a member)"))?
                    .ok_or_else(|| corrupt(key.clone(), item))
            })
            .collect::<Result<Vec<AccountId>>>()?;
        accounts.sort_unstable();
        Ok(accounts)
    }

    async fn heartbeat(&self, member: &str, ttl: Duration) -> Result<Vec<String>> {
        let key = self.registry_members_key();
        let ttl = ttl_millis(ttl);
        // Safe to repeat: a second beat moves the same member's end a little later.
        let reply: Value = self
            .with_retries(
                Op::Read,
                "heartbeat script",
                self.registry_route(),
                |mut connection| {
                    let mut invocation = self.heartbeat.prepare_invoke();
                    invocation.key(&key).arg(member).arg(ttl);
                    async move { invocation.invoke_async(&mut connection).await }
                },
            )
            .await?;
        let mut members = strings(&reply).ok_or_else(|| corrupt(key, &reply))?;
        members.sort_unstable();
        Ok(members)
    }

    async fn leave(&self, member: &str) -> Result<()> {
        let key = self.registry_members_key();
        self.with_retries(Op::Read, "ZREM", self.registry_route(), |mut connection| {
            let key = key.clone();
            async move {
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(member)
                    .query_async::<()>(&mut connection)
                    .await
            }
        })
        .await
    }
}
