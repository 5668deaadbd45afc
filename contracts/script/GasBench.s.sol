// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Vm, console} from "../test/utils/Test.sol";
import {MultiTokenPushPull} from "../src/MultiTokenPushPull.sol";
import {ProductBank} from "../src/ProductBank.sol";
import {ProductBankFactory} from "../src/ProductBankFactory.sol";
import {TestToken} from "../src/mocks/TestToken.sol";
import {Reward} from "../src/interfaces/IMultiTokenPushPull.sol";

/// @notice Gas benchmark run as real transactions on anvil by scripts/gas.sh, with the
///         standard OpenZeppelin ERC20 (TestToken). Before every pushRewards/pull* tx it
///         logs `GAS_LABEL=<name>`; scripts/gas-report.js pairs labels with receipts.
contract GasBench {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    uint256 internal constant KEY = 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80;
    bytes32 internal constant CAPPED = bytes32(uint256(1));
    bytes32 internal constant UNLIMITED = bytes32(uint256(2));
    bytes32 internal constant CAMPAIGN_B = bytes32(uint256(3));
    bytes32 internal constant CAMPAIGN_C = bytes32(uint256(4));

    MultiTokenPushPull internal pp;
    ProductBank internal bank;
    TestToken internal tokenA;
    TestToken internal tokenB;
    TestToken internal tokenC;
    uint256 internal nonces;

    function run() external {
        address deployer = vm.addr(KEY);
        vm.startBroadcast(KEY);
        pp = new MultiTokenPushPull(deployer);
        ProductBankFactory factory = new ProductBankFactory(address(pp));
        bank = ProductBank(factory.deployBank(keccak256("gas.bench"), deployer));
        pp.authorizePusher(address(bank));
        bank.grantRole(bank.DISTRIBUTOR_ROLE(), deployer);
        tokenA = new TestToken("A", "A", 18);
        tokenB = new TestToken("B", "B", 18);
        tokenC = new TestToken("C", "C", 18);
        TestToken[3] memory all = [tokenA, tokenB, tokenC];
        for (uint256 t; t < 3; ++t) {
            all[t].mint(deployer, 1e30);
            all[t].approve(address(bank), 1e30);
            bank.deposit(address(all[t]), 1e30);
        }
        bank.allocateCampaignBudget(CAPPED, address(tokenA), 1e28);
        bank.allocateCampaignBudget(UNLIMITED, address(tokenA), 0);
        bank.allocateCampaignBudget(CAMPAIGN_B, address(tokenB), 0);
        bank.allocateCampaignBudget(CAMPAIGN_C, address(tokenC), 0);

        // Steady state: MultiTokenPushPull already holds some of each token.
        _push("setup", CAPPED, address(tokenA), _users(900, 1));
        _push("setup", CAMPAIGN_B, address(tokenB), _users(900, 1));
        _push("setup", CAMPAIGN_C, address(tokenC), _users(900, 1));

        // Pushes: first-time recipients, then the same recipients again (returning).
        uint256[3] memory sizes = [uint256(1), 10, 100];
        for (uint256 i; i < 3; ++i) {
            string memory n = vm.toString(sizes[i]);
            _push(string.concat("push_capped_new_", n), CAPPED, address(tokenA), _users(i + 1, sizes[i]));
        }
        for (uint256 i; i < 3; ++i) {
            string memory n = vm.toString(sizes[i]);
            _push(string.concat("push_capped_returning_", n), CAPPED, address(tokenA), _users(i + 1, sizes[i]));
        }
        _push("push_unlimited_new_1", UNLIMITED, address(tokenA), _users(10, 1));
        _push("push_unlimited_new_100", UNLIMITED, address(tokenA), _users(11, 100));
        _push("push_unlimited_returning_1", UNLIMITED, address(tokenA), _users(10, 1));
        _push("push_unlimited_returning_100", UNLIMITED, address(tokenA), _users(11, 100));

        // Claims: claimer i (keys 1..4) gets rewards in the first i tokens (1 in A for #1).
        for (uint256 c = 1; c <= 4; ++c) {
            payable(vm.addr(c)).transfer(1 ether);
        }
        _creditClaimers("setup");
        vm.stopBroadcast();
        _claims("fresh_holder"); // claimers hold none of the tokens yet
        vm.startBroadcast(KEY);
        _creditClaimers("setup");
        vm.stopBroadcast();
        _claims("returning_holder"); // claimers already hold the tokens
    }

    /// @dev claimer 1: A only (pullReward); claimers 2..4: the first k = 1..3 tokens (pullRewards).
    function _creditClaimers(string memory label) internal {
        Reward[] memory a = new Reward[](4);
        Reward[] memory b = new Reward[](2);
        Reward[] memory c = new Reward[](1);
        for (uint256 i; i < 4; ++i) {
            a[i] = Reward(vm.addr(i + 1), 3e18 + i);
        }
        b[0] = Reward(vm.addr(3), 2e18);
        b[1] = Reward(vm.addr(4), 2e18);
        c[0] = Reward(vm.addr(4), 1e18);
        _push(label, UNLIMITED, address(tokenA), a);
        _push(label, CAMPAIGN_B, address(tokenB), b);
        _push(label, CAMPAIGN_C, address(tokenC), c);
    }

    function _claims(string memory kind) internal {
        console.log(string.concat("GAS_LABEL=pullReward_", kind));
        vm.broadcast(1);
        pp.pullReward(address(tokenA));
        address[3] memory all = [address(tokenA), address(tokenB), address(tokenC)];
        for (uint256 k = 1; k <= 3; ++k) {
            address[] memory list = new address[](k);
            for (uint256 t; t < k; ++t) {
                list[t] = all[t];
            }
            console.log(string.concat("GAS_LABEL=pullRewards_", vm.toString(k), "_", kind));
            vm.broadcast(k + 1);
            pp.pullRewards(list);
        }
    }

    /// @dev `count` distinct pseudo-random recipients of set `set`, realistic amounts.
    function _users(uint256 set, uint256 count) internal pure returns (Reward[] memory r) {
        r = new Reward[](count);
        for (uint256 i; i < count; ++i) {
            address u = address(uint160(uint256(keccak256(abi.encode("user", set, i)))));
            r[i] = Reward(u, 1e18 + i * 1e15 + 12345);
        }
    }

    function _push(string memory label, bytes32 campaignId, address token, Reward[] memory rewards) internal {
        bytes32 nonce = keccak256(abi.encode("gas-bench", ++nonces));
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(KEY, bank.hashPushRewards(campaignId, token, rewards, nonce, deadline));
        console.log(string.concat("GAS_LABEL=", label));
        bank.pushRewards(campaignId, token, rewards, nonce, deadline, abi.encodePacked(r, s, v));
    }
}
