//! Owns the operators' commands about tenants and records, so runbooks never need SQL: `tenant
//! show | set-plan | link-customer | import`, `audit list`, `usage export`, `backup` and
//! `openapi`. Writes are audited with the OS user as actor (`cli:<user>`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::{AuditAction, TenantAction, UsageAction, billing_for_command, cli_actor, migrated_store};
use crate::config;
use crate::domain::access::{Effective, Tier};
use crate::domain::clock::{Clock, Timestamp, parse_rfc3339, rfc3339, rfc3339_opt};
use crate::domain::ids::TenantId;
use crate::store::{AuditRow, EventRow, Link, ManualPlan, Store, TenantRow};

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_date(s: &str) -> anyhow::Result<Timestamp> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp())
        .with_context(|| format!("{s:?} is not a date: use YYYY-MM-DD or RFC 3339"))
}

fn checked_reason(reason: &str) -> anyhow::Result<&str> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || reason.contains('\0') {
        bail!("--reason is required (at most 500 characters)");
    }
    Ok(reason)
}

pub(super) async fn tenant(action: TenantAction) -> anyhow::Result<()> {
    match action {
        TenantAction::Show { id, json } => show(&id, json).await,
        TenantAction::SetPlan { id, tier, clear, reason, until } => {
            set_plan(&id, tier.as_deref(), clear, &reason, until.as_deref()).await
        }
        TenantAction::LinkCustomer { id, customer, reason } => link_customer(&id, &customer, &reason).await,
        TenantAction::Import { file } => import(&file).await,
    }
}

/// One sentence on which access rule gives the tenant its tier now.
fn why(row: &TenantRow, effective: &Effective, now: Timestamp) -> String {
    let tier = effective.tier.as_str();
    let until = |t: Option<Timestamp>| t.map(|t| format!(" until {}", rfc3339(t))).unwrap_or_default();
    if let Some(manual) = row.manual_plan_tier.as_deref() {
        let ends = row.manual_contract_ends_at;
        if ends.is_none_or(|e| now < e) {
            let reason = row.manual_plan_reason.as_deref().unwrap_or("no reason recorded");
            return format!("manual plan {manual} ({reason}){}: it wins over Stripe", until(ends));
        }
    }
    if let Some(reason) = effective.reason {
        let from = effective.lapsed_from.map(|t| format!(" (was {})", t.as_str())).unwrap_or_default();
        return format!("free because {}{from}", reason.as_str());
    }
    let status = row.stripe_subscription_status.as_deref();
    match (effective.tier, status) {
        (Tier::Free, None) => "no subscription: free".to_owned(),
        (Tier::Free, Some(s)) => format!("subscription {s}: free"),
        (_, Some("past_due")) => {
            format!("past_due within the grace period: {tier}{}", until(effective.grace_ends_at))
        }
        (_, Some(s)) if effective.access_until.is_some() => {
            format!("subscription {s}, ending: {tier}{}", until(effective.access_until))
        }
        (_, Some(s)) => format!("subscription {s}: {tier}"),
        (_, None) => tier.to_owned(),
    }
}

#[derive(Serialize)]
struct Shown {
    tenant: Value,
    effective: Value,
    why: String,
    usage: Option<Value>,
    events: Vec<Value>,
    audit: Vec<Value>,
}

fn event_json(e: &EventRow) -> Value {
    json!({
        "id": e.id, "type": e.kind, "status": e.status, "attempts": e.attempts,
        "received_at": rfc3339(e.received_at), "last_error": e.last_error,
    })
}

fn audit_json(a: &AuditRow) -> Value {
    json!({
        "at": rfc3339(a.created_at), "tenant_id": a.tenant_id, "actor": a.actor, "action": a.action,
        "before": a.before_state, "after": a.after_state, "reason": a.reason,
    })
}

async fn show(id: &str, as_json: bool) -> anyhow::Result<()> {
    let id = TenantId::parse(id)?;
    let billing = billing_for_command().await?;
    // The status reads the row and its effective tier together, as the API's answer does.
    let status = billing.status(id.as_str()).await?;
    let Some(row) = status.row.as_ref() else {
        bail!("no tenant {id}");
    };
    let now = billing.clock.now();
    let effective = &status.effective;
    let events = match row.stripe_customer_id.as_deref() {
        Some(c) => billing.store.customer_events(c, 10).await?,
        None => Vec::new(),
    };
    let audit = billing.store.audit_entries(Some(id.as_str()), None, 10).await?;
    let usage = status.usage.as_ref().map(|u| {
        let per_metric: serde_json::Map<String, Value> = u
            .used
            .iter()
            .map(|(m, used)| (m.as_str().to_owned(), json!({ "used": used, "limit": m.free_limit() })))
            .collect();
        json!({ "metrics": per_metric, "resets_at": rfc3339_opt(u.resets_at) })
    });
    let shown = Shown {
        tenant: serde_json::to_value(row)?,
        effective: json!({
            "tier": effective.tier.as_str(),
            "reason": effective.reason.map(|r| r.as_str()),
            "access_until": rfc3339_opt(effective.access_until),
            "grace_ends_at": rfc3339_opt(effective.grace_ends_at),
        }),
        why: why(row, effective, now),
        usage,
        events: events.iter().map(event_json).collect(),
        audit: audit.iter().map(audit_json).collect(),
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    let or_dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    println!("tenant        {} ({})", row.id, row.name);
    println!("billing email {}", or_dash(row.billing_email.as_deref()));
    println!("effective     {} — {}", effective.tier.as_str(), shown.why);
    println!(
        "stored        plan_tier={} status={} seats={} interval={} period_end={}",
        row.plan_tier,
        or_dash(row.stripe_subscription_status.as_deref()),
        row.stripe_seat_count.map_or("-".into(), |n| n.to_string()),
        or_dash(row.stripe_interval.as_deref()),
        or_dash(rfc3339_opt(row.stripe_current_period_end).as_deref()),
    );
    println!(
        "stripe        customer={} subscription={} price={}",
        or_dash(row.stripe_customer_id.as_deref()),
        or_dash(row.stripe_subscription_id.as_deref()),
        or_dash(row.stripe_price_id.as_deref()),
    );
    if row.cancel_at_period_end || row.cancel_at.is_some() || row.grace_started_at.is_some() {
        println!(
            "ending        cancel_at_period_end={} cancel_at={} grace_started_at={}",
            row.cancel_at_period_end,
            or_dash(rfc3339_opt(row.cancel_at).as_deref()),
            or_dash(rfc3339_opt(row.grace_started_at).as_deref()),
        );
    }
    if let Some(tier) = row.manual_plan_tier.as_deref() {
        println!(
            "manual plan   {tier} until {} ({})",
            or_dash(rfc3339_opt(row.manual_contract_ends_at).as_deref()),
            or_dash(row.manual_plan_reason.as_deref()),
        );
    }
    if let Some(u) = &status.usage {
        let parts: Vec<String> =
            u.used.iter().map(|(m, used)| format!("{} {used}/{}", m.as_str(), m.free_limit())).collect();
        println!(
            "free usage    {} (oldest frees up {})",
            parts.join(", "),
            or_dash(rfc3339_opt(u.resets_at).as_deref())
        );
    }
    println!("\nlast events of its customer ({})", events.len());
    for e in &events {
        println!(
            "  {}  {}  {:<10} {}  {}",
            rfc3339(e.received_at),
            e.id,
            e.status,
            e.kind,
            e.last_error.as_deref().unwrap_or("")
        );
    }
    println!("\nlast audit entries ({})", audit.len());
    for a in &audit {
        println!(
            "  {}  {:<22} by {}  {}",
            rfc3339(a.created_at),
            a.action,
            a.actor,
            a.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn set_plan(
    id: &str,
    tier: Option<&str>,
    clear: bool,
    reason: &str,
    until: Option<&str>,
) -> anyhow::Result<()> {
    let id = TenantId::parse(id)?;
    let reason = checked_reason(reason)?;
    let tier = match (tier, clear) {
        (Some(_), true) => bail!("give a TIER or --clear, not both"),
        (None, false) => bail!("give a TIER (free, team, business, enterprise) or --clear"),
        (None, true) => None,
        (Some(t), false) => Some(
            Tier::parse(t).with_context(|| format!("{t:?} is one of free, team, business, enterprise"))?,
        ),
    };
    if clear && until.is_some() {
        bail!("--until goes with a TIER, not --clear");
    }
    let contract_ends_at = until.map(parse_date).transpose()?;
    let billing = billing_for_command().await?;
    let now = billing.clock.now();
    if contract_ends_at.is_some_and(|t| t <= now) {
        bail!("--until is in the past");
    }
    let plan = ManualPlan { tier, reason, contract_ends_at };
    match billing.store.set_manual_plan(id.as_str(), plan, &cli_actor(), now).await {
        Err(crate::store::StoreError::NotFound) => bail!("no tenant {id}"),
        other => other?,
    };
    let (_, effective) = billing.tenant_effective(id.as_str()).await?;
    match tier {
        Some(t) => {
            println!("{id}: manual plan {} set; effective tier {}", t.as_str(), effective.tier.as_str())
        }
        None => println!("{id}: manual plan removed; effective tier {}", effective.tier.as_str()),
    }
    Ok(())
}

async fn link_customer(id: &str, customer: &str, reason: &str) -> anyhow::Result<()> {
    let id = TenantId::parse(id)?;
    let customer = crate::domain::ids::CustomerId::parse(customer)?;
    let reason = checked_reason(reason)?;
    let billing = billing_for_command().await?;
    // Stripe first, outside any transaction: the customer must exist and must not name another
    // tenant in its metadata (that would hand this tenant another's plan).
    let found = billing
        .stripe
        .get(&format!("/v1/customers/{}", customer.as_str()), &[])
        .await
        .with_context(|| format!("cannot read customer {customer} from Stripe"))?;
    if found["deleted"].as_bool() == Some(true) {
        bail!("Stripe says customer {customer} is deleted");
    }
    if let Some(named) = found["metadata"]["hydra_tenant_id"].as_str().filter(|n| *n != id.as_str()) {
        bail!("customer {customer}'s metadata names tenant {named:?}, not {id}; not linked");
    }
    let now = billing.clock.now();
    match billing.store.link_customer(id.as_str(), customer.as_str(), &cli_actor(), reason, now).await {
        Err(crate::store::StoreError::NotFound) => bail!("no tenant {id}"),
        Err(e) => return Err(e.into()),
        Ok(Link::HasOther(other)) => {
            bail!("{id} is linked to {other} already; linking {customer} would orphan it")
        }
        Ok(Link::TakenBy(holder)) => bail!("customer {customer} belongs to tenant {holder}; not linked"),
        Ok(Link::Already(_)) => println!("{id} is linked to {customer} already"),
        Ok(Link::Linked(_)) => println!("{id} linked to {customer}"),
    }
    // The tenant's plan now follows that customer's subscriptions.
    let (_, repaired) = billing.reconcile(Some(id.as_str()), &cli_actor()).await?;
    let (row, effective) = billing.tenant_effective(id.as_str()).await?;
    row.context("the tenant vanished")?;
    println!("reconciled from Stripe ({repaired} repaired): effective tier {}", effective.tier.as_str());
    Ok(())
}

/// One line of an import file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    id: String,
    name: String,
    #[serde(default)]
    billing_email: Option<String>,
}

#[derive(Default)]
struct ImportSummary {
    created: u64,
    updated: u64,
    unchanged: u64,
    rejected: Vec<(u64, String)>,
}

/// Announces each tenant as `PUT /api/tenants/{id}` would; a tenant already as the file says is
/// left untouched, so a second run writes nothing.
async fn import(file: &Path) -> anyhow::Result<()> {
    let store = migrated_store(&config::env_map()).await?;
    let lines = read_import(file)?;
    let bar = if std::io::stdout().is_terminal() {
        indicatif::ProgressBar::new(lines.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let now = Clock::System.now();
    let mut summary = ImportSummary::default();
    for (number, line) in lines {
        bar.inc(1);
        let line = match line {
            Ok(l) => l,
            Err(reason) => {
                summary.rejected.push((number, reason));
                continue;
            }
        };
        match announce(&store, &line, now).await {
            Ok(Announced::Created) => summary.created += 1,
            Ok(Announced::Updated) => summary.updated += 1,
            Ok(Announced::Unchanged) => summary.unchanged += 1,
            Err(reason) => summary.rejected.push((number, reason)),
        }
    }
    bar.finish_and_clear();
    println!(
        "created {}, updated {}, unchanged {}, rejected {}",
        summary.created,
        summary.updated,
        summary.unchanged,
        summary.rejected.len()
    );
    for (number, reason) in &summary.rejected {
        println!("  line {number}: {reason}");
    }
    match summary.rejected.len() {
        0 => Ok(()),
        1 => bail!("1 line rejected"),
        n => bail!("{n} lines rejected"),
    }
}

type NumberedLines = Vec<(u64, Result<ImportLine, String>)>;

/// The file's records with their line numbers: CSV (header `id,name,billing_email`) by a `.csv`
/// extension, JSON lines otherwise.
fn read_import(file: &Path) -> anyhow::Result<NumberedLines> {
    let opened = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let is_csv = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(opened);
        let headers = reader.headers()?.clone();
        for needed in ["id", "name"] {
            if !headers.iter().any(|h| h == needed) {
                bail!("the CSV header lacks {needed:?} (it is id,name,billing_email)");
            }
        }
        return Ok(reader
            .deserialize::<ImportLine>()
            .enumerate()
            .map(|(i, r)| (i as u64 + 2, r.map_err(|e| format!("not a record: {e}"))))
            .collect());
    }
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(opened).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<ImportLine>(&line).map_err(|e| format!("not a record: {e}"));
        out.push((i as u64 + 1, parsed));
    }
    Ok(out)
}

enum Announced {
    Created,
    Updated,
    Unchanged,
}

async fn announce(store: &Store, line: &ImportLine, now: Timestamp) -> Result<Announced, String> {
    let id = TenantId::parse(line.id.trim()).map_err(|e| e.to_string())?;
    let name = line.name.trim();
    crate::domain::ids::check_tenant_name(name)?;
    let email = line.billing_email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    if email.is_some_and(|e| !crate::domain::ids::plausible_email(e)) {
        return Err("billing_email is not an email address".into());
    }
    let before = store.tenant(id.as_str()).await.map_err(|e| e.to_string())?;
    if let Some(b) = &before
        && b.name == name
        && b.billing_email.as_deref() == email
    {
        return Ok(Announced::Unchanged);
    }
    let (_, created) = store.upsert_tenant(id.as_str(), name, email, now).await.map_err(|e| e.to_string())?;
    Ok(if created { Announced::Created } else { Announced::Updated })
}

pub(super) async fn audit(action: AuditAction) -> anyhow::Result<()> {
    let AuditAction::List { tenant, since, limit, json } = action;
    let store = migrated_store(&config::env_map()).await?;
    if let Some(t) = &tenant {
        TenantId::parse(t)?;
    }
    let since = since.as_deref().map(parse_date).transpose()?;
    let rows = store.audit_entries(tenant.as_deref(), since, limit.clamp(1, 100_000)).await?;
    let mut out = std::io::stdout().lock();
    for a in &rows {
        if json {
            writeln!(out, "{}", audit_json(a))?;
        } else {
            writeln!(
                out,
                "{}  {:<20} {:<22} by {:<20} {}",
                rfc3339(a.created_at),
                a.tenant_id,
                a.action,
                a.actor,
                a.reason.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

/// Where an export's rows go, in its format (the CSV writer buffers by itself).
enum Export {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Jsonl(std::io::BufWriter<Box<dyn Write>>),
}

/// Rows read per query: one page is all an export holds in memory.
const EXPORT_PAGE: i64 = 1000;

pub(super) async fn usage(action: UsageAction) -> anyhow::Result<()> {
    let UsageAction::Export { since, until, format, output } = action;
    let store = migrated_store(&config::env_map()).await?;
    let since = since.as_deref().map(parse_date).transpose()?.unwrap_or(i64::MIN);
    let until = until.as_deref().map(parse_date).transpose()?.unwrap_or(i64::MAX);
    let sink: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::fs::File::create_new(path).with_context(|| {
            format!("cannot create {} (an export never overwrites a file)", path.display())
        })?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = match format {
        super::ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(sink);
            w.write_record(["reservation_id", "tenant_id", "metric", "tier", "committed_at"])?;
            Export::Csv(Box::new(w))
        }
        super::ExportFormat::Jsonl => Export::Jsonl(std::io::BufWriter::new(sink)),
    };
    let mut after: Option<(Timestamp, String)> = None;
    let mut total = 0u64;
    loop {
        let page = store
            .committed_runs(since, until, after.as_ref().map(|(t, id)| (*t, id.as_str())), EXPORT_PAGE)
            .await?;
        for run in &page {
            let at = rfc3339(run.settled_at);
            match &mut out {
                Export::Csv(w) => w.write_record([&run.id, &run.tenant_id, &run.metric, &run.tier, &at])?,
                Export::Jsonl(w) => writeln!(
                    w,
                    "{}",
                    json!({"reservation_id": run.id, "tenant_id": run.tenant_id, "metric": run.metric,
                           "tier": run.tier, "committed_at": at})
                )?,
            }
        }
        total += page.len() as u64;
        match page.last() {
            Some(last) if page.len() as i64 == EXPORT_PAGE => {
                after = Some((last.settled_at, last.id.clone()))
            }
            _ => break,
        }
    }
    match &mut out {
        Export::Csv(w) => w.flush()?,
        Export::Jsonl(w) => w.flush()?,
    }
    if output.is_some() {
        eprintln!("exported {total} committed runs");
    }
    Ok(())
}

pub(super) async fn backup(path: &Path) -> anyhow::Result<()> {
    let store = migrated_store(&config::env_map()).await?;
    store.backup_to(path).await?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!("backed up to {} ({size} bytes)", path.display());
    Ok(())
}
