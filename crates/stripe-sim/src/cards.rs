//! Owns Stripe's test cards and what each does when attached or charged (stripe-facts.md §15).

use crate::error::StripeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Card {
    /// 4242 4242 4242 4242: every charge succeeds.
    Visa,
    /// 4000 0000 0000 0002: declined; cannot even be attached to a customer.
    Declined,
    /// 4000 0000 0000 9995: declined for insufficient funds; like 0002, it cannot be attached.
    InsufficientFunds,
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
    /// Every test card, in the order the hosted pages list them.
    pub const ALL: [Card; 6] = [
        Card::Visa,
        Card::Declined,
        Card::AttachThenDecline,
        Card::InsufficientFunds,
        Card::AuthenticateUnlessSetUp,
        Card::AlwaysAuthenticate,
    ];

    /// The test PaymentMethod a client may send where Stripe takes a payment method id, exactly
    /// as Stripe's testing docs pair them (stripe-facts.md §15): `pm_card_authenticationRequired`
    /// is 3184 (every payment authenticates), `pm_card_authenticationRequiredOnSetup` is 3155
    /// (authenticate once, then set up). Card numbers and `tok_…` tokens are not payment methods:
    /// Stripe answers them `resource_missing`, and so does the simulator.
    pub fn from_token(token: &str) -> Option<Card> {
        Card::ALL.into_iter().find(|card| card.token() == token)
    }

    /// The card a number typed into a card form stands for (spaces allowed), as on Stripe's
    /// hosted pages: the only place the simulator takes numbers.
    pub fn from_number(number: &str) -> Option<Card> {
        let digits: String = number.chars().filter(|c| !c.is_whitespace()).collect();
        Card::ALL.into_iter().find(|card| card.number() == digits)
    }

    pub fn token(self) -> &'static str {
        match self {
            Card::Visa => "pm_card_visa",
            Card::Declined => "pm_card_chargeDeclined",
            Card::InsufficientFunds => "pm_card_chargeDeclinedInsufficientFunds",
            Card::AttachThenDecline => "pm_card_chargeCustomerFail",
            Card::AuthenticateUnlessSetUp => "pm_card_authenticationRequiredOnSetup",
            Card::AlwaysAuthenticate => "pm_card_authenticationRequired",
        }
    }

    pub fn number(self) -> &'static str {
        match self {
            Card::Visa => "4242424242424242",
            Card::Declined => "4000000000000002",
            Card::InsufficientFunds => "4000000000009995",
            Card::AttachThenDecline => "4000000000000341",
            Card::AuthenticateUnlessSetUp => "4000002500003155",
            Card::AlwaysAuthenticate => "4000002760003184",
        }
    }

    pub fn last4(self) -> &'static str {
        match self {
            Card::Visa => "4242",
            Card::Declined => "0002",
            Card::InsufficientFunds => "9995",
            Card::AttachThenDecline => "0341",
            Card::AuthenticateUnlessSetUp => "3155",
            Card::AlwaysAuthenticate => "3184",
        }
    }

    pub fn check_attach(self) -> Result<(), StripeError> {
        match self {
            Card::Declined => Err(StripeError::card_declined("generic_decline")),
            Card::InsufficientFunds => Err(StripeError::card_declined("insufficient_funds")),
            _ => Ok(()),
        }
    }

    /// `off_session`: a renewal or retry; `set_up`: the card was authenticated before.
    pub fn charge(self, off_session: bool, set_up: bool) -> ChargeOutcome {
        match self {
            Card::Visa => ChargeOutcome::Succeeded,
            Card::Declined | Card::InsufficientFunds | Card::AttachThenDecline => ChargeOutcome::Declined,
            Card::AuthenticateUnlessSetUp if off_session && set_up => ChargeOutcome::Succeeded,
            Card::AuthenticateUnlessSetUp | Card::AlwaysAuthenticate => ChargeOutcome::RequiresAction,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_numbers_are_stripes_own_pairs() {
        for (token, number, last4) in [
            ("pm_card_visa", "4242424242424242", "4242"),
            ("pm_card_chargeDeclined", "4000000000000002", "0002"),
            ("pm_card_chargeDeclinedInsufficientFunds", "4000000000009995", "9995"),
            ("pm_card_chargeCustomerFail", "4000000000000341", "0341"),
            ("pm_card_authenticationRequiredOnSetup", "4000002500003155", "3155"),
            ("pm_card_authenticationRequired", "4000002760003184", "3184"),
        ] {
            let card = Card::from_token(token).unwrap();
            assert_eq!(Card::from_number(number), Some(card), "{token} is {number}");
            assert_eq!(card.last4(), last4);
            // A number is not a payment method id, nor is a legacy token.
            assert_eq!(Card::from_token(number), None, "{number} is not a PaymentMethod");
            assert_eq!(Card::from_token(&token.replace("pm_card_", "tok_")), None);
        }
        assert_eq!(Card::from_number("4242 4242 4242 4242"), Some(Card::Visa), "as typed into a form");
        assert_eq!(Card::from_token("pm_card_authenticationRequiredChallenge"), None, "not one of Stripe's");
    }

    #[test]
    fn each_card_behaves_as_stripe_documents() {
        // 3184: every payment authenticates, set up or not, on or off session.
        for (off, set_up) in [(false, false), (true, false), (true, true)] {
            assert_eq!(Card::AlwaysAuthenticate.charge(off, set_up), ChargeOutcome::RequiresAction);
        }
        // 3155: authenticate once; after set-up, off-session renewals pass.
        assert_eq!(Card::AuthenticateUnlessSetUp.charge(false, false), ChargeOutcome::RequiresAction);
        assert_eq!(Card::AuthenticateUnlessSetUp.charge(true, true), ChargeOutcome::Succeeded);
        // 0002 and 9995 cannot be attached; 0341 attaches and then declines.
        assert!(Card::Declined.check_attach().is_err() && Card::InsufficientFunds.check_attach().is_err());
        assert!(Card::AttachThenDecline.check_attach().is_ok());
        assert_eq!(Card::AttachThenDecline.charge(true, false), ChargeOutcome::Declined);
    }
}
