//! The demo extract: the published INT test patients and synthetic 999-range patients, with a
//! few invalid rows, always the same for the same size.

use anyhow::Context;
use std::path::Path;

/// The INT test patients and whether each has an opt-out.
pub(crate) fn int_test_patients() -> Vec<(u64, bool)> {
    mock_mesh::pos::PUBLISHED_TEST_PATIENTS
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            let (env, n, o) = (f.next()?, f.next()?, f.next()?);
            (env == "int").then(|| Some((n.parse().ok()?, o == "yes")))?
        })
        .collect()
}

/// Writes the demo extract: `record_id,nhs_number,event_date,code`, rows in a shuffled order.
/// Returns the number of rows and the synthetic patients picked (one in ten) to have opted out.
pub(crate) fn write_sample(path: &Path, patients: u32) -> anyhow::Result<(u64, Vec<u64>)> {
    // SplitMix64: a fixed seed makes the same sample every time.
    let mut state = 20261123u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut numbers: Vec<String> = Vec::new();
    for (n, _) in int_test_patients() {
        for _ in 0..2 {
            numbers.push(n.to_string());
        }
    }
    let mut made = 0;
    let mut opted_out = Vec::new();
    while made < patients {
        let prefix = 999_000_000 + (next() % 1_000_000) as u32;
        let Some(check) = processor::nhs::check_digit_of_prefix(prefix) else {
            continue;
        };
        made += 1;
        let n = format!("{prefix}{check}");
        if next() % 10 == 0 {
            opted_out.push(prefix as u64 * 10 + check as u64);
        }
        for _ in 0..1 + next() % 4 {
            numbers.push(n.clone());
        }
    }
    // A few lines the POS would reject: a wrong check digit, too short, letters.
    numbers.extend(["9990000019".into(), "999123".into(), "99912X4567".into()]);
    for i in (1..numbers.len()).rev() {
        numbers.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let mut text = String::from("record_id,nhs_number,event_date,code\r\n");
    for (i, n) in numbers.iter().enumerate() {
        let day = 1 + i % 28;
        text += &format!(
            "R{:06},{n},2026-10-{day:02},\"C{}, routine\"\r\n",
            i + 1,
            i % 97
        );
    }
    processor::files::create_private(path)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((numbers.len() as u64, opted_out))
}
