//! Owns how an amount of US cents is written for people (pages and emails): `$1,234.50`,
//! `-$3.00` for a credit. Amounts stay integer cents everywhere else.

/// `$20.00`, `-$1.50`, `$1,234.00`.
pub fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}${grouped}.{:02}", abs % 100)
}

#[cfg(test)]
mod tests {
    use super::dollars;

    #[test]
    fn amounts_read_as_people_write_them() {
        assert_eq!(dollars(2000), "$20.00");
        assert_eq!(dollars(57_600), "$576.00");
        assert_eq!(dollars(123_456_789), "$1,234,567.89");
        assert_eq!(dollars(-150), "-$1.50");
        assert_eq!(dollars(5), "$0.05");
        assert_eq!(dollars(i64::MIN), "-$92,233,720,368,547,758.08");
    }
}
