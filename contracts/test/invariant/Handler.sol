// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "../utils/Test.sol";
import {MultiTokenPushPull} from "../../src/MultiTokenPushPull.sol";
import {ProductBank} from "../../src/ProductBank.sol";
import {ProductBankFactory} from "../../src/ProductBankFactory.sol";
import {TestToken} from "../../src/mocks/TestToken.sol";
import {Reward} from "../../src/interfaces/IMultiTokenPushPull.sol";
import {NoReturnToken} from "../mocks/Tokens.sol";

interface IToken {
    function mint(address to, uint256 amount) external;
    function approve(address spender, uint256 amount) external;
    function balanceOf(address) external view returns (uint256);
}

/// @dev Random but always-valid actions on the whole system (it is the owner of both
///      banks and of MultiTokenPushPull), with ghost accounting to check against.
contract Handler is Test {
    uint256 internal constant DISTRIBUTOR_KEY = 0xD157;
    uint256 public constant BANKS = 2;
    uint256 public constant TOKENS = 2;
    uint256 public constant USERS = 5;
    uint256 public constant CAMPAIGNS = 8; // campaign c is bound to token c % TOKENS

    MultiTokenPushPull public pushPull;
    ProductBank[BANKS] public banks;
    address[TOKENS] public tokens;
    address[USERS] public users;

    mapping(address token => mapping(address user => uint256)) public ghostPushed;
    mapping(address token => mapping(address user => uint256)) public ghostClaimed;
    mapping(address token => uint256) public ghostTotalPushed;
    mapping(address token => uint256) public ghostTotalClaimed;
    mapping(bytes32 => uint256) public calls;
    uint256 internal nonceCounter;

    constructor() {
        pushPull = new MultiTokenPushPull(address(this));
        ProductBankFactory factory = new ProductBankFactory(address(pushPull));
        tokens[0] = address(new TestToken("A", "A", 18));
        tokens[1] = address(new NoReturnToken()); // USDT-like
        address distributor = vm.addr(DISTRIBUTOR_KEY);
        for (uint256 b; b < BANKS; ++b) {
            banks[b] = ProductBank(factory.deployBank(bytes32(b + 1), address(this)));
            banks[b].grantRole(banks[b].DISTRIBUTOR_ROLE(), distributor);
            pushPull.authorizePusher(address(banks[b]));
            for (uint256 t; t < TOKENS; ++t) {
                IToken(tokens[t]).approve(address(banks[b]), type(uint256).max);
                IToken(tokens[t]).mint(address(this), 1e24);
                banks[b].deposit(tokens[t], 1e24);
            }
            // start with half the campaigns live: even ones unlimited, odd ones capped
            for (uint256 c; c < CAMPAIGNS / 2; ++c) {
                banks[b].allocateCampaignBudget(campaignId(c), tokens[c % TOKENS], c % 2 == 0 ? 0 : 1e23);
            }
        }
        for (uint256 u; u < USERS; ++u) {
            users[u] = address(uint160(0x5000 + u));
        }
    }

    function campaignId(uint256 c) public pure returns (bytes32) {
        return bytes32(0xCA00 + c);
    }

    // ----------------------------------------------------------------- actions

    function deposit(uint256 b, uint256 t, uint256 amount) external {
        ProductBank bank = banks[b % BANKS];
        address tok = tokens[t % TOKENS];
        amount = bound(amount, 1, 1e24);
        IToken(tok).mint(address(this), amount);
        bank.deposit(tok, amount);
        calls["deposit"]++;
    }

    function donate(uint256 target, uint256 t, uint256 amount) external {
        address tok = tokens[t % TOKENS];
        address to = target % 3 == 2 ? address(pushPull) : address(banks[target % 2]);
        IToken(tok).mint(to, bound(amount, 1, 1e22));
        calls["donate"]++;
    }

    function allocate(uint256 b, uint256 c, uint256 budget) external {
        ProductBank bank = banks[b % BANKS];
        c %= CAMPAIGNS;
        address tok = tokens[c % TOKENS];
        (address bound_, bool active, bool capped, uint256 remaining) = bank.getCampaign(campaignId(c));
        if (bound_ != address(0) && !active) return; // deactivated for good
        uint256 room = bank.getAvailableBalance(tok) + (capped ? remaining : 0);
        budget = budget % 4 == 0 ? 0 : bound(budget, 0, room); // 0 = unlimited
        bank.allocateCampaignBudget(campaignId(c), tok, budget);
        calls["allocate"]++;
    }

    function deactivate(uint256 b, uint256 c, uint256 chance) external {
        if (chance % 4 != 0) return; // rarer than the rest: deactivation is final
        ProductBank bank = banks[b % BANKS];
        c %= CAMPAIGNS;
        if (!bank.isCampaignActive(campaignId(c))) return;
        bank.deactivateCampaign(campaignId(c));
        calls["deactivate"]++;
    }

    function push(uint256 b, uint256 c, uint256 n, uint256 seed) external {
        ProductBank bank = banks[b % BANKS];
        c %= CAMPAIGNS;
        address tok = tokens[c % TOKENS];
        (, bool active, bool capped, uint256 remaining) = bank.getCampaign(campaignId(c));
        if (!active) return;
        uint256 limit = capped ? remaining : bank.getAvailableBalance(tok);
        if (limit == 0) return;
        n = bound(n, 1, 6);
        uint256 per = limit / n;
        if (per == 0) (n, per) = (1, limit);
        Reward[] memory rewards = new Reward[](n);
        for (uint256 i; i < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            rewards[i] = Reward(users[r % USERS], bound(r >> 8, 1, per));
        }
        _signAndPush(bank, campaignId(c), tok, rewards);
        for (uint256 i; i < n; ++i) {
            ghostPushed[tok][rewards[i].user] += rewards[i].amount;
            ghostTotalPushed[tok] += rewards[i].amount;
        }
        calls["push"]++;
    }

    function claim(uint256 u, uint256 t) external {
        address user = users[u % USERS];
        address tok = tokens[t % TOKENS];
        uint256 pending = pushPull.getPendingAmount(tok, user);
        if (pending == 0) return;
        vm.prank(user);
        pushPull.pullReward(tok);
        _ghostClaim(tok, user, pending);
        calls["claim"]++;
    }

    function claimMany(uint256 u) external {
        claimAllFor(users[u % USERS]);
        calls["claimMany"]++;
    }

    function withdraw(uint256 b, uint256 t, uint256 amount) external {
        ProductBank bank = banks[b % BANKS];
        address tok = tokens[t % TOKENS];
        uint256 available = bank.getAvailableBalance(tok);
        if (available == 0) return;
        bank.withdraw(tok, bound(amount, 1, available));
        calls["withdraw"]++;
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 0, 1 days));
    }

    // ----------------------------------------------------------------- helpers

    function _signAndPush(ProductBank bank, bytes32 cid, address tok, Reward[] memory rewards) private {
        bytes32 nonce = keccak256(abi.encode("inv", ++nonceCounter));
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(DISTRIBUTOR_KEY, bank.hashPushRewards(cid, tok, rewards, nonce, deadline));
        bank.pushRewards(cid, tok, rewards, nonce, deadline, abi.encodePacked(r, s, v));
    }

    /// @dev pullRewards over every token, with a duplicate, for one user.
    function claimAllFor(address user) public {
        address[] memory list = new address[](TOKENS + 1);
        uint256[] memory before = new uint256[](TOKENS);
        for (uint256 t; t < TOKENS; ++t) {
            list[t] = tokens[t];
            before[t] = pushPull.getPendingAmount(tokens[t], user);
        }
        list[TOKENS] = tokens[0];
        vm.prank(user);
        pushPull.pullRewards(list);
        for (uint256 t; t < TOKENS; ++t) {
            _ghostClaim(tokens[t], user, before[t]);
        }
    }

    function _ghostClaim(address tok, address user, uint256 amount) private {
        ghostClaimed[tok][user] += amount;
        ghostTotalClaimed[tok] += amount;
    }

    /// @dev Sum of remaining budgets of active capped campaigns of `bank` in token `t`.
    function cappedRemaining(uint256 b, uint256 t) external view returns (uint256 sum) {
        for (uint256 c = t; c < CAMPAIGNS; c += TOKENS) {
            (, bool active, bool capped, uint256 remaining) = banks[b].getCampaign(campaignId(c));
            if (active && capped) sum += remaining;
        }
    }

    /// @dev Forge passes through these selectors only.
    function actions() external pure returns (bytes4[] memory s) {
        s = new bytes4[](9);
        s[0] = this.deposit.selector;
        s[1] = this.donate.selector;
        s[2] = this.allocate.selector;
        s[3] = this.deactivate.selector;
        s[4] = this.push.selector;
        s[5] = this.claim.selector;
        s[6] = this.claimMany.selector;
        s[7] = this.withdraw.selector;
        s[8] = this.warp.selector;
    }
}
