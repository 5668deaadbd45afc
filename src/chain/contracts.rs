//! Typed bindings of the contracts, generated from the committed build artifacts
//! (`contracts/artifacts/*.json`, checked up to date by the contracts' tests).

#![allow(clippy::too_many_arguments)]

use alloy::sol;

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ProductBank,
    "contracts/artifacts/ProductBank.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    MultiTokenPushPull,
    "contracts/artifacts/MultiTokenPushPull.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ProductBankFactory,
    "contracts/artifacts/ProductBankFactory.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TestToken,
    "contracts/artifacts/TestToken.json"
);
