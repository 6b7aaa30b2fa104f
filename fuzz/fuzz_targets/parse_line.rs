//! Fuzzes the processor's line parser and validator: the first byte picks the CSV column and
//! delimiter, the
//! rest is one line. `csv::field` cuts the field out, `nhs::classify` runs on the field and on
//! the whole line under all four [`Rules`] combinations, and `nhs::is_valid` on the raw bytes.
//! None may panic, and:
//! - a `Valid` number is below 10^10 and its ten digits pass `is_valid`;
//! - a `Valid` field is a placeholder exactly when its number is a repdigit, and never under
//!   `reject_placeholders`;
//! - a strict `Valid` field is ten bare digits, not normalised, and `is_valid` on it;
//! - strict `Valid` implies lenient `Valid` with the same number; `is_valid` on the field implies
//!   strict `Valid`;
//! - a field the CSV parser returns lies within the line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use processor::csv;
use processor::nhs::{classify, is_valid, write_digits, Field, Reason, Rules};

const ALL_RULES: [Rules; 4] = [
    Rules {
        strict: false,
        reject_placeholders: false,
    },
    Rules {
        strict: false,
        reject_placeholders: true,
    },
    Rules {
        strict: true,
        reject_placeholders: false,
    },
    Rules {
        strict: true,
        reject_placeholders: true,
    },
];

fn is_repdigit(n: u64) -> bool {
    n % 1_111_111_111 == 0
}

/// Classifies `field` under every rule set and checks the invariants.
fn check_field(field: &[u8]) {
    let valid_raw = is_valid(field);
    let mut by_rules = [None; 4];
    for (i, rules) in ALL_RULES.iter().enumerate() {
        let result = classify(field, *rules);
        match result {
            Field::Valid {
                number,
                normalised,
                placeholder,
            } => {
                assert!(number < 10_000_000_000, "{number} has more than ten digits");
                let mut digits = [0u8; 10];
                write_digits(number, &mut digits);
                assert!(is_valid(&digits), "Valid {number} fails is_valid");
                assert_eq!(placeholder, is_repdigit(number));
                assert!(!(placeholder && rules.reject_placeholders));
                if rules.strict {
                    assert!(!normalised);
                    assert_eq!(field, &digits[..], "strict accepted a non-bare field");
                }
                if !normalised {
                    assert_eq!(field, &digits[..], "unchanged field is not the number");
                }
            }
            Field::Invalid(Reason::Placeholder) => assert!(rules.reject_placeholders),
            Field::Invalid(_) => {}
            Field::Blank => assert!(field.iter().all(|&b| b == b' ' || b == b'\t')),
        }
        by_rules[i] = Some(result);
    }
    let [lenient, lenient_rej, strict, strict_rej] = by_rules.map(Option::unwrap);
    if valid_raw {
        // ten bare digits that pass Modulus 11: valid everywhere (placeholders aside)
        assert!(matches!(
            lenient,
            Field::Valid {
                normalised: false,
                ..
            }
        ));
        assert!(matches!(
            strict,
            Field::Valid {
                normalised: false,
                ..
            }
        ));
    }
    for (s, l) in [(strict, lenient), (strict_rej, lenient_rej)] {
        if let Field::Valid { number, .. } = s {
            assert!(matches!(l, Field::Valid { number: n, .. } if n == number));
        }
    }
    // rejecting placeholders changes nothing but placeholders
    for (keep, reject) in [(lenient, lenient_rej), (strict, strict_rej)] {
        match keep {
            Field::Valid {
                placeholder: true, ..
            } => assert_eq!(reject, Field::Invalid(Reason::Placeholder)),
            other => assert_eq!(other, reject),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&col, line)) = data.split_first() else {
        return;
    };
    check_field(line);
    // the `.dat` form: the field without its trailing comma
    if let Some(stripped) = line.strip_suffix(b",") {
        check_field(stripped);
    }
    let delim = [b',', b'\t', b';', b'|'][usize::from(col >> 3 & 3)];
    let col = usize::from(col % 8);
    if let Ok(field) = csv::field(line, col, delim) {
        let base = line.as_ptr() as usize;
        let at = field.as_ptr() as usize;
        assert!(at >= base && at + field.len() <= base + line.len());
        check_field(field);
    }
    let _ = csv::header_fields(line, delim);
});
