//! Owns Stripe's test cards and what each does when attached or charged (stripe-facts.md §15).

use crate::error::StripeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Card {
    /// 4242 4242 4242 4242: every charge succeeds.
    Visa,
    /// 4000 0000 0000 0002: declined; cannot even be attached to a customer.
    Declined,
    /// 4000 0000 0000 0341: attaches, then every charge is declined.
    AttachThenDecline,
    /// 4000 0025 0000 3155: authenticates on-session; once set up, off-session charges pass.
    AuthenticateUnlessSetUp,
    /// 4000 0027 6000 3184: every charge asks for authentication.
    AlwaysAuthenticate,
}

/// What a charge attempt does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded,
    Declined,
    RequiresAction,
}

impl Card {
    /// The test token (`pm_card_…`) or card number a client may send.
    pub fn from_token(token: &str) -> Option<Card> {
        Some(match token {
            "pm_card_visa" | "tok_visa" | "4242424242424242" => Card::Visa,
            "pm_card_chargeDeclined" | "tok_chargeDeclined" | "4000000000000002" => Card::Declined,
            "pm_card_chargeCustomerFail" | "tok_chargeCustomerFail" | "4000000000000341" => {
                Card::AttachThenDecline
            }
            "pm_card_authenticationRequired" | "tok_authenticationRequired" | "4000002500003155" => {
                Card::AuthenticateUnlessSetUp
            }
            // 3184 has no pm_card_ alias of its own in Stripe's list; the 3DS2-required token also
            // authenticates on every charge, so both stand for "always authenticate".
            "pm_card_authenticationRequiredChallenge"
            | "pm_card_threeDSecure2Required"
            | "4000002760003184" => Card::AlwaysAuthenticate,
            _ => return None,
        })
    }

    pub fn last4(self) -> &'static str {
        match self {
            Card::Visa => "4242",
            Card::Declined => "0002",
            Card::AttachThenDecline => "0341",
            Card::AuthenticateUnlessSetUp => "3155",
            Card::AlwaysAuthenticate => "3184",
        }
    }

    pub fn check_attach(self) -> Result<(), StripeError> {
        match self {
            Card::Declined => Err(StripeError::card_declined("generic_decline")),
            _ => Ok(()),
        }
    }

    /// `off_session`: a renewal or retry; `set_up`: the card was authenticated before.
    pub fn charge(self, off_session: bool, set_up: bool) -> ChargeOutcome {
        match self {
            Card::Visa => ChargeOutcome::Succeeded,
            Card::Declined | Card::AttachThenDecline => ChargeOutcome::Declined,
            Card::AuthenticateUnlessSetUp if off_session && set_up => ChargeOutcome::Succeeded,
            Card::AuthenticateUnlessSetUp | Card::AlwaysAuthenticate => ChargeOutcome::RequiresAction,
        }
    }
}
